"""Parameter bounds: the change of variables, both engines at a bounded optimum, every start and
refit inside, and bad bounds named."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fits
from fits import bench, bounds, engine, laws

SIGMOID = laws.get("sigmoid_link")
TRUTH = {"a": -0.75, "k": 3.0, "L0": 3.0, "b": 1.0}  # accuracy from 0.25 (chance) up to 1
L_SMALL = np.linspace(2.8, 4.2, 10)  # the losses of small models, fitted
L_LARGE = np.array([2.0, 2.2, 2.4])  # the losses of large models, predicted
CEILING = {"b": (None, 1.0)}


def _accuracy(seed=3):
    noisy = SIGMOID.predict(TRUTH, L_SMALL) + np.random.default_rng(seed).normal(0, 0.01, 10)
    x = np.concatenate([L_SMALL, L_LARGE])
    held = np.arange(len(x)) >= len(L_SMALL)
    return x, np.concatenate([noisy, SIGMOID.predict(TRUTH, L_LARGE)]), held


def test_box_round_trip_is_exact_and_saturates_on_the_bound():
    box = laws.get("chinchilla").box({"alpha": (0.1, 0.5), "E": (None, 3.0), "beta": (0.2, None)})
    natural = np.array([[1.7, 400.0, 410.0, 0.34, 0.28], [2.999, 1e-9, 1e9, 0.1001, 5.0]])
    np.testing.assert_allclose(box.to_natural(box.to_raw(natural)), natural, rtol=1e-9)
    far = box.to_natural(np.array([800.0, -800.0, 700.0, 800.0, -800.0]))
    assert far.tolist() == [3.0, 0.0, np.exp(700.0), 0.5, 0.2]  # exactly on each bound
    assert np.isnan(box.to_raw(np.array([3.5, 1.0, 1.0, 0.3, 0.3]))[0])  # outside: no raw value


def test_change_of_variables_has_finite_derivatives_everywhere():
    import jax
    import jax.numpy as jnp

    lower, upper = np.array([0.0, -np.inf, 1.0, -np.inf]), np.array([2.0, 1.0, np.inf, np.inf])
    with jax.enable_x64(True):
        for raw in (-900.0, -30.0, 0.0, 30.0, 700.0):
            jac = jax.jacfwd(lambda r: bounds.to_natural(r, lower, upper, jnp))(jnp.full(4, raw))
            assert np.all(np.isfinite(np.asarray(jac))), raw


def test_a_ceiling_keeps_accuracy_below_one_and_extrapolates_better():
    x, y, held = _accuracy()
    free = fits.fit("sigmoid_link", x, y, holdout=held)
    capped = fits.fit("sigmoid_link", x, y, holdout=held, bounds=CEILING)
    assert free.params["b"] > 1.02  # the unbounded ceiling passes 100 %
    assert capped.params["b"] <= 1.0 and "b at its upper bound (1)" in capped.diagnostics
    assert capped.heldout_error < 0.5 * free.heldout_error
    assert capped.bounds == {"b": (-np.inf, 1.0)} and capped.ok
    assert capped.to_dict()["bounds"] == {"b": [None, 1.0]}


def test_bounded_sigmoid_reaches_the_scipy_bounded_optimum():
    x, y, held = _accuracy()
    fast = fits.fit("sigmoid_link", x, y, holdout=held, bounds=CEILING)
    ref = fits.fit("sigmoid_link", x, y, holdout=held, bounds=CEILING, engine_name="scipy")
    assert ref.params["b"] == 1.0 and fast.params["b"] == pytest.approx(1.0, abs=1e-12)
    assert fast.objective == pytest.approx(ref.objective, rel=1e-8)


def test_bounded_chinchilla_reaches_the_scipy_bounded_optimum():
    x, y = bench.synthetic_chinchilla(60, seed=1)
    law = laws.get("chinchilla")
    limits = {"alpha": (0.0, 0.3), "beta": (None, 0.5)}  # the unbounded alpha is 0.31
    starts = law.box(limits).move_inside(law.start_grid())[::900]  # 5 starts
    fast = fits.fit("chinchilla", x, y, starts=starts, bounds=limits)
    ref = fits.fit("chinchilla", x, y, starts=starts, bounds=limits, engine_name="scipy")
    assert fast.params["alpha"] == pytest.approx(0.3, abs=1e-12)
    assert "alpha at its upper bound (0.3)" in fast.diagnostics
    assert fast.objective == pytest.approx(ref.objective, rel=1e-8)


@settings(max_examples=8, deadline=None)
@given(lower=st.floats(0.5, 0.95), width=st.floats(0.02, 0.5), seed=st.integers(0, 100))
def test_no_start_step_or_refit_leaves_the_bounds(lower, width, seed):
    upper = lower + width
    x, y, held = _accuracy(seed)
    res = fits.fit("sigmoid_link", x, y, holdout=held, bounds={"b": (lower, upper)}, starts=8,
                   seed=seed, bootstrap=16, max_iter=60)
    b = res.bootstrap_params[:, SIGMOID.param_names.index("b")]
    assert lower <= res.params["b"] <= upper
    assert np.all((b >= lower) & (b <= upper))


def test_every_lane_stays_inside_from_every_start():
    x, y, held = _accuracy()
    box = SIGMOID.box({"b": (0.6, 0.9), "k": (None, 2.5)})
    problem = engine.Problem(law=SIGMOID, xs=(x[~held],), target=y[~held], base_raw=np.zeros(4),
                             free_idx=(0, 1, 2, 3), loss="lsq", box=box)
    starts = box.to_raw(box.move_inside(SIGMOID.start_grid()))
    out = engine.minimize_lm(problem, starts, merge=False, max_iter=40)
    natural = box.to_natural(out.theta)
    assert np.all((natural >= box.lower) & (natural <= box.upper))


def test_a_law_may_declare_bounds_and_a_fit_may_lift_them():
    capped_law = dataclasses.replace(SIGMOID, name="accuracy_link", bounds=CEILING)
    x, y, held = _accuracy()
    assert fits.fit(capped_law, x, y, holdout=held).params["b"] <= 1.0
    lifted = fits.fit(capped_law, x, y, holdout=held, bounds={"b": (None, None)})
    assert lifted.params["b"] > 1.02 and lifted.bounds == {}
    with pytest.raises(ValueError, match="lower bound 2 must lie below"):
        dataclasses.replace(SIGMOID, bounds={"k": (2.0, 1.0)})


@pytest.mark.parametrize("limits, message", [
    ({"q": (0, 1)}, r"bounds name unknown parameters \['q'\]"),
    ({"b": (1.0, 0.5)}, "lower bound 1 must lie below the upper bound 0.5"),
    ({"b": (0.5, 0.5)}, "lower bound 0.5 must lie below"),
    ({"k": (None, -1.0)}, r"k > 0"),
    ({"b": 1.0}, r"\(lower, upper\) pair"),
    ({"b": ("low", 1.0)}, "lower bound must be a number"),
    ({"b": (float("nan"), 1.0)}, "lower bound is NaN"),
])
def test_bad_bounds_are_named(limits, message):
    x, y, held = _accuracy()
    with pytest.raises(ValueError, match=message):
        fits.fit("sigmoid_link", x, y, holdout=held, bounds=limits)


def test_starts_outside_the_bounds_are_errors_and_default_starts_move_inside():
    x, y, held = _accuracy()
    inside = [[-0.7, 3.0, 3.0, 0.9]]
    with pytest.raises(ValueError, match=r"start 1 puts b = 1.2 outside its bounds \(-inf, 1\)"):
        fits.fit("sigmoid_link", x, y, holdout=held, bounds=CEILING,
                 starts=inside + [[-0.7, 3.0, 3.0, 1.2]])
    with pytest.raises(ValueError, match=r"bounds exclude every start.*b in \(-inf, 1\)"):
        fits.fit("sigmoid_link", x, y, holdout=held, bounds=CEILING,
                 starts=[[-0.7, 3.0, 3.0, 1.0], [-0.7, 3.0, 3.0, 1.5]])
    with pytest.raises(ValueError, match=r"fixed: b = 1.5 lies outside its bounds"):
        fits.fit("sigmoid_link", x, y, holdout=held, bounds=CEILING, fixed={"b": 1.5})
    # the grid's b in {0, 0.5} lies below a floor of 0.6: both move just inside it (one start)
    res = fits.fit("sigmoid_link", x, y, holdout=held, bounds={"b": (0.6, 1.0)})
    assert res.n_starts == len(SIGMOID.start_grid()) // 2 and 0.6 < res.params["b"] <= 1.0


def test_cli_takes_bounds_and_bootstrap_groups(tmp_path):
    import pandas as pd

    from fits.__main__ import main

    x, y, held = _accuracy()
    csv = tmp_path / "acc.csv"
    pd.DataFrame({"L": x[~held], "acc": y[~held], "run": np.repeat(np.arange(5), 2)}).to_csv(
        csv, index=False)
    args = ["--csv", str(csv), "--law", "sigmoid_link", "--x", "L", "--y", "acc",
            "--bootstrap", "16", "--bootstrap-groups", "run", "--out", str(tmp_path / "out")]
    assert main(args + ["--bounds", "b=:1,k=0.5:"]) == 0
    table = pd.read_csv(tmp_path / "out" / "fits.csv")
    assert table["b"][0] <= 1.0 and table["b_hi"][0] <= 1.0
    with pytest.raises(ValueError, match="NAME=LOWER:UPPER"):
        main(args + ["--bounds", "b=1"])
