"""fit(): holdout protocols, bootstrap intervals, scipy agreement, diagnostics, tables, plots, CLI."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import fits
from fits import laws

X = np.logspace(6, 10, 8)
TRUTH = {"E": 1.5, "A": 300.0, "alpha": 0.3}


def _y(seed=0, scale=0.005):
    y = laws.get("power_law").predict(TRUTH, X)
    return y * np.exp(np.random.default_rng(seed).normal(0.0, scale, len(X)))


@pytest.fixture(scope="module")
def boot_fit():
    return fits.fit("power_law", X, _y(), holdout="smallest:5", starts=12, bootstrap=200)


def test_holdout_smallest_fits_only_the_smallest(boot_fit):
    assert boot_fit.n_fit == 5 and boot_fit.n_points == 8
    assert boot_fit.fit_mask.tolist() == [True] * 5 + [False] * 3
    rel = boot_fit.predict(X[5:]) / _y()[5:] - 1.0
    assert boot_fit.heldout_error == pytest.approx(np.sqrt(np.mean(rel ** 2)))
    assert boot_fit.train_error < 0.01


def test_holdout_largest_and_mask_and_none():
    y = _y()
    res = fits.fit("power_law", X, y, holdout="largest:2", starts=12)
    assert res.n_fit == 6 and len(res.heldout_errors) == 2
    mask = np.zeros(8, dtype=bool)
    mask[[0, 7]] = True
    assert fits.fit("power_law", X, y, holdout=mask, starts=12).n_fit == 6
    res = fits.fit("power_law", X, y, starts=12)
    assert res.n_fit == 8 and math.isnan(res.heldout_error)


def test_bootstrap_intervals_cover_truth_and_predictions(boot_fit):
    for name, value in TRUTH.items():
        lo, hi = boot_fit.ci[name]
        assert lo < boot_fit.params[name] < hi
    lo, hi = boot_fit.predict_interval(X)
    assert np.all(lo <= boot_fit.predict(X) + 1e-12) and np.all(boot_fit.predict(X) <= hi + 1e-12)
    assert all(v > 0 for v in boot_fit.se.values())
    d = boot_fit.to_dict()
    assert d["n_bootstrap"] == 200 and set(d["ci"]) == set(TRUTH)


def test_jax_and_scipy_reach_the_same_optimum():
    y = _y(seed=3, scale=0.02)
    jax_fit = fits.fit("power_law", X, y, starts=12)
    ref = fits.fit("power_law", X, y, starts=12, engine_name="scipy")
    assert jax_fit.objective == pytest.approx(ref.objective, rel=1e-5, abs=1e-9)
    assert jax_fit.objective <= ref.objective + 1e-9
    for name in TRUTH:
        assert jax_fit.params[name] == pytest.approx(ref.params[name], rel=1e-2)


def test_lsq_and_huber_differ_under_an_outlier():
    y = _y()
    y[2] *= 1.3
    huber = fits.fit("power_law", X, y, starts=12, delta=1e-3)
    lsq = fits.fit("power_law", X, y, starts=12, loss="lsq")
    assert abs(huber.params["alpha"] - 0.3) < abs(lsq.params["alpha"] - 0.3)


def test_non_monotone_bleu_is_flagged_as_misaligned():
    bleu = np.array([10.0, 14.0, 12.0, 16.0, 11.0, 15.0, 9.0, 13.0])
    res = fits.fit("log_law", X, bleu, holdout="smallest:4", starts=16)
    text = " ".join(res.diagnostics)
    assert "not monotone" in text and "misaligned" in text


def test_clean_fit_has_no_diagnostics():
    y = laws.get("power_law").predict(TRUTH, X)
    assert fits.fit("power_law", X, y, starts=12).diagnostics == []


def test_fit_that_cannot_evaluate_is_marked_failed_not_raised():
    # log(A x^alpha) < 0 at every start and point: the log-law is undefined everywhere.
    x = np.array([1.01, 1.02, 1.03, 1.04])
    res = fits.fit("log_law", x, np.array([1.0, 2.0, 3.0, 4.0]),
                   starts=np.array([[1e-3, 1e-3, 0.5]]), max_iter=16)
    assert res.status == "failed" and res.diagnostics


def test_tables_are_deterministic_and_complete(boot_fit, tmp_path):
    other = fits.fit("log_law", X, (np.log(5 * X ** 0.3)) ** 1.2, holdout="smallest:4", starts=16)
    results = {("mixA", "en-de"): boot_fit, ("mixB", "en-de"): other}
    frame = fits.tables.to_frame(results, key_names=["mixture", "pair"])
    assert list(frame["mixture"]) == ["mixA", "mixB"]
    assert {"alpha", "alpha_lo", "alpha_hi", "train_error", "heldout_error", "formula"} <= set(
        frame.columns)
    path = tmp_path / "a.csv"
    first = fits.tables.to_csv(results, path)
    again = fits.fit("power_law", X, _y(), holdout="smallest:5", starts=12, bootstrap=200)
    second = fits.tables.to_csv({("mixA", "en-de"): again, ("mixB", "en-de"): other})
    assert first == second == path.read_text()
    md = fits.tables.to_markdown(frame)
    assert md.count("\n") == 4 and "mixA" in md
    tex = fits.tables.to_latex(frame, caption="fits")
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\midrule" in tex


def test_plot_draws_data_curve_and_band(boot_fit):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    fits.plots.plot_fit(ax, X, _y(), boot_fit, label="ce")
    assert ax.get_xscale() == "log"
    assert len(ax.lines) == 2 and len(ax.collections) == 3  # 2 scatters + band
    plt.close(fig)


def test_cli_on_a_small_csv(tmp_path):
    rows = [dict(mixture=m, D_f=1, D_p=d, bleu=(np.log(a * d ** 0.3)) ** 1.2)
            for m, a in [("en", 5.0), ("de", 3.0)] for d in np.logspace(7, 10, 6)]
    csv = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fits", "--csv", str(csv), "--law", "log_law", "--x", "D_p",
           "--y", "bleu", "--by", "mixture,D_f", "--holdout", "smallest:4", "--starts", "16",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "fits.csv")
    assert list(table["mixture"]) == ["de", "en"]
    assert table["A"].tolist() == pytest.approx([3.0, 5.0], rel=1e-4)
    assert (table["n_fit"] == 4).all() and (out / "fits.tex").exists()
    bad = subprocess.run(cmd[:-2] + ["--y", "nope", "--out", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_chinchilla_grid_fit_matches_the_scipy_reference_loop():
    from fits import bench

    x, y = bench.synthetic_chinchilla(120, seed=1)
    law = laws.get("chinchilla")
    starts = law.start_grid()[::150]  # 30 of Hoffmann et al.'s 4,500 starts
    res = fits.fit("chinchilla", x, y, starts=starts)
    ref_f, ref_theta = bench.scipy_loop(x, y, law.to_raw(starts))
    assert res.objective == pytest.approx(ref_f, abs=1e-6)
    assert res.objective <= ref_f + 1e-9
    assert res.params["alpha"] == pytest.approx(ref_theta[3], rel=1e-2)


def test_cli_holds_out_the_rows_a_column_marks(tmp_path):
    from fits import published
    from fits.__main__ import main

    df = published.alabdulmohsin2022_nmt()
    df["held"] = 1 - df["Training"]
    csv = tmp_path / "nmt.csv"
    df.to_csv(csv, index=False)
    args = ["--csv", str(csv), "--law", "power_law", "--x", "Seen Examples", "--y", "Loss",
            "--by", "Model", "--starts", "24", "--out", str(tmp_path / "out")]
    assert main(args + ["--holdout", "column:held"]) == 0
    table = pd.read_csv(tmp_path / "out" / "fits.csv")
    assert (table["n_heldout"] == 1).all() and len(table) == 5
    sub = df[df["Model"] == table["Model"][0]]
    direct = fits.fit("power_law", sub["Seen Examples"].to_numpy(), sub["Loss"].to_numpy(),
                      holdout=sub["held"].to_numpy() == 1, starts=24)
    assert table["heldout_error"][0] == pytest.approx(direct.heldout_error, rel=1e-6)
    with pytest.raises(ValueError, match="column:Loss"):
        main(args + ["--holdout", "column:Loss"])
    with pytest.raises(ValueError, match="nope"):
        main(args + ["--holdout", "column:nope"])
