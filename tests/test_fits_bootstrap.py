"""The block bootstrap: whole groups resampled, its intervals against the point bootstrap's, and
bad group labels named."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fits
from fits import core, laws

D = np.tile(np.logspace(7, 9, 8), 6)  # 6 runs, each checkpointed at the same 8 D
RUN = np.repeat([f"run{i}" for i in range(6)], 8)
TRUTH = {"E": 1.5, "A": 300.0, "alpha": 0.3}


def _pooled_runs(seed=0, run_scale=0.02, point_scale=0.002):
    """Loss of 6 runs: each run off the law by its own factor, shared by all its checkpoints."""
    rng = np.random.default_rng(seed)
    run_offset = np.repeat(rng.normal(0.0, run_scale, 6), 8)
    noise = run_offset + rng.normal(0.0, point_scale, len(D))
    return laws.get("power_law").predict(TRUTH, D) * np.exp(noise)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=7), seed=st.integers(0, 1000))
def test_block_resampling_keeps_groups_whole(sizes, seed):
    groups = np.repeat(np.arange(len(sizes)), sizes)
    weights = core._resample_weights(groups, len(groups), 50, seed)
    for g, size in enumerate(sizes):
        block = weights[:, groups == g]
        assert np.all(block == block[:, :1])  # every point of a group drawn as often as the group
    first_points = weights[:, np.searchsorted(groups, np.arange(len(sizes)))]
    assert np.all(first_points.sum(axis=1) == len(sizes))  # as many group draws as groups
    points = core._resample_weights(None, len(groups), 50, seed)
    assert np.all(points.sum(axis=1) == len(groups))


def test_block_and_point_intervals_differ_when_runs_share_their_errors():
    """Runs offset as a whole on a shared grid of D: each run's curve has the law's exact shape, so
    the shape is known better than independent points suggest; a point resample mixes runs at each
    D and invents shape noise.  (Which of the two covers the truth: `python -m fits.coverage`.)"""
    y = _pooled_runs()
    points = fits.fit("power_law", D, y, starts=12, bootstrap=100)
    blocks = fits.fit("power_law", D, y, starts=12, bootstrap=100, bootstrap_groups=RUN)
    assert blocks.n_groups == 6 and points.n_groups == 0
    assert blocks.params == points.params  # the same fit; only the intervals differ
    width = {kind: r.ci["alpha"][1] - r.ci["alpha"][0] for kind, r in (("point", points),
                                                                      ("block", blocks))}
    assert width["point"] > 2 * width["block"]
    assert blocks.to_dict()["n_groups"] == 6


def test_groups_seen_only_in_held_out_points_are_not_resampled():
    y = _pooled_runs()
    held = RUN == "run5"
    res = fits.fit("power_law", D, y, holdout=held, starts=12, bootstrap=40,
                   bootstrap_groups=pd.Series(RUN))
    assert res.n_groups == 5 and res.n_fit == 40


def test_few_groups_are_flagged():
    y = _pooled_runs()
    labels = np.where(np.isin(RUN, ["run0", "run1", "run2"]), "early", "late")
    res = fits.fit("power_law", D, y, starts=12, bootstrap=40, bootstrap_groups=labels)
    assert res.n_groups == 2
    assert any("block bootstrap over 2 groups" in d for d in res.diagnostics)


def test_bad_group_labels_are_named():
    y = _pooled_runs()
    with pytest.raises(ValueError, match="single group.*at least 2"):
        fits.fit("power_law", D, y, bootstrap=10, bootstrap_groups=["run0"] * len(D))
    with pytest.raises(ValueError, match="single group"):  # one group among the fitted points
        fits.fit("power_law", D, y, bootstrap=10, bootstrap_groups=np.where(D > 1e8, 1, 0),
                 holdout="smallest:10")
    with pytest.raises(ValueError, match="47 labels for 48 points"):
        fits.fit("power_law", D, y, bootstrap=10, bootstrap_groups=RUN[:-1])
    labels = RUN.astype(object)
    labels[5] = None
    with pytest.raises(ValueError, match="missing label at index 5"):
        fits.fit("power_law", D, y, bootstrap=10, bootstrap_groups=labels)
    with pytest.raises(ValueError, match="missing label at index 2"):
        fits.fit("power_law", D, y, bootstrap=10,
                 bootstrap_groups=np.r_[0.0, 1.0, np.nan, np.ones(45)])
