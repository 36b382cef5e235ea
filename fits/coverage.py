"""Benchmark: do bootstrap intervals cover the truth when checkpoints of one run share their errors?

    python -m fits.coverage [--draws 200] [--resamples 200] [--skip-published]

Checkpoints of one pretraining run are not independent points: a run that is lucky early stays
lucky.  A point bootstrap resamples them as if they were; a block bootstrap
(`fit(..., bootstrap_groups=run)`) resamples whole runs.  Two synthetic studies with known
correlated noise, each drawn `--draws` times, count how often each 95 % interval covers the true
value:

  seeds    one configuration trained with 8 seeds, each checkpointed at the same 8 D; the power law
           E + A D^-alpha (E 1.5, A 300, alpha 0.3).  The prediction is at 10x the largest D.
  ladder   8 model sizes N (1e7 .. 1e9), one run each, checkpointed at 8 D from 2 to 200 tokens per
           parameter; Chinchilla's law with Hoffmann et al.'s parameters.  The prediction is at
           N = 1e10, D = 2e11.

The log-loss of every point is off the law by a run offset (1 %, shared by the run's checkpoints),
a random walk along the run's checkpoints (AR(1), rho 0.9, 0.5 %) and a point's own noise (0.2 %).

Then, on published data, the two kinds of interval side by side: Gadre et al.'s RedPajama runs
(their over-training law on the four small sizes x eight token multipliers, blocks = model size;
the prediction is their 6.9B model at M = 20) and Muennighoff et al.'s single-epoch runs, seed
repeats included (Chinchilla's law, blocks = model size; the prediction at N = 1e10, D = 2e11).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fits import core, laws, published

RUN_OFFSET, WALK, WALK_RHO, POINT_NOISE = 0.01, 0.005, 0.9, 0.002
N_RUNS, N_CHECKPOINTS = 8, 8


def correlated_noise(rng, n_runs=N_RUNS, n_checkpoints=N_CHECKPOINTS) -> np.ndarray:
    """Log-scale errors, run by run: an offset per run, an AR(1) walk along its checkpoints, and
    independent noise per point; flattened run-major."""
    walk = np.zeros((n_runs, n_checkpoints))
    walk[:, 0] = rng.normal(0.0, WALK, n_runs)
    for k in range(1, n_checkpoints):
        step = rng.normal(0.0, WALK * np.sqrt(1 - WALK_RHO ** 2), n_runs)
        walk[:, k] = WALK_RHO * walk[:, k - 1] + step
    offset = rng.normal(0.0, RUN_OFFSET, (n_runs, 1))
    return (offset + walk + rng.normal(0.0, POINT_NOISE, walk.shape)).ravel()


class Seeds:
    """One configuration, several seeds, one shared grid of checkpoints."""

    law = "power_law"
    truth = {"E": 1.5, "A": 300.0, "alpha": 0.3}
    x = np.tile(np.logspace(7, 9, N_CHECKPOINTS), N_RUNS)
    far = np.array([1e10])
    params = ("alpha", "E")
    starts = 12


class Ladder:
    """A ladder of model sizes, one run each, checkpointed along D."""

    law = "chinchilla"
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    _N = np.repeat(np.logspace(7, 9, N_RUNS), N_CHECKPOINTS)
    x = {"N": _N, "D": _N * np.tile(np.logspace(np.log10(2), np.log10(200), N_CHECKPOINTS),
                                     N_RUNS)}
    far = {"N": np.array([1e10]), "D": np.array([2e11])}
    params = ("alpha", "beta")
    starts = laws.get("chinchilla").start_grid()[::97]  # 47 of Hoffmann et al.'s starts


RUNS = np.repeat(np.arange(N_RUNS), N_CHECKPOINTS)


def coverage(study, n_draws: int, n_resamples: int, seed: int = 0) -> dict[str, dict]:
    """Per kind of bootstrap: the share of draws whose 95 % interval covers each true value, and the
    median width of the intervals."""
    law = laws.get(study.law)
    clean = law.predict(study.truth, study.x)
    true_far = float(law.predict(study.truth, study.far)[0])
    rng = np.random.default_rng(seed)
    hits = {"point": [], "block": []}
    widths = {"point": [], "block": []}
    for draw in range(n_draws):
        y = clean * np.exp(correlated_noise(rng))
        for kind in hits:
            res = core.fit(study.law, study.x, y, starts=study.starts, bootstrap=n_resamples,
                           seed=draw, bootstrap_groups=RUNS if kind == "block" else None)
            lo, hi = res.predict_interval(study.far)
            intervals = [res.ci[p] for p in study.params] + [(lo[0], hi[0])]
            truths = [study.truth[p] for p in study.params] + [true_far]
            hits[kind].append([a <= v <= b for (a, b), v in zip(intervals, truths)])
            widths[kind].append([b - a for a, b in intervals])
    names = list(study.params) + ["prediction"]
    return {kind: {"names": names, "coverage": np.mean(hits[kind], axis=0),
                   "width": np.median(widths[kind], axis=0)} for kind in hits}


def _print_coverage(name: str, study, table: dict[str, dict], n_draws: int, seconds: float):
    se = np.sqrt(0.95 * 0.05 / n_draws)
    print(f"{name}: {study.law}, {N_RUNS} runs x {N_CHECKPOINTS} checkpoints, {n_draws} draws "
          f"({seconds:.0f} s); nominal 0.95, one binomial s.e. {se:.3f}")
    for kind, row in table.items():
        cells = ", ".join(f"{n} {c:.3f} (width {w:.3g})"
                          for n, c, w in zip(row["names"], row["coverage"], row["width"]))
        print(f"  {kind} bootstrap: {cells}")


def published_intervals(n_resamples: int) -> None:
    """Point and block intervals side by side on two published data sets."""
    sets = published.gadre2024("rpj")
    small = sets[sets["model_config"].str.startswith("d=")]
    x = {"N": small.N_params.to_numpy(), "M": small.token_multiplier_M.to_numpy()}
    target = sets[(sets["model_config"] == "open_lm_7b") & (sets["token_multiplier_M"] == 20)]
    far = {"N": target.N_params.to_numpy(), "M": target.token_multiplier_M.to_numpy()}
    _side_by_side("Gadre et al. RedPajama, 4 sizes x 8 multipliers, blocks = size",
                  "gadre_overtrain", x, small.loss_c4_val.to_numpy(), small.model_config, far,
                  n_resamples, {})
    df = published.muennighoff2023(fit_set=False)
    single = df[df.D <= df.U * (1 + 1e-6)]  # one epoch: no repetition, Chinchilla's law holds
    x = {"N": single.N.to_numpy(), "D": single.D.to_numpy()}
    far = {"N": np.array([1e10]), "D": np.array([2e11])}
    _side_by_side(f"Muennighoff et al., {len(single)} single-epoch runs incl. seed repeats, "
                  f"blocks = model size ({single.N.nunique()})", "chinchilla", x,
                  single.loss.to_numpy(), single.N.to_numpy(), far, n_resamples, {})


def _side_by_side(title, law, x, y, groups, far, n_resamples, options) -> None:
    print(title)
    for kind in ("point", "block"):
        res = core.fit(law, x, y, bootstrap=n_resamples,
                       bootstrap_groups=np.asarray(groups) if kind == "block" else None, **options)
        cells = [f"{n} {res.params[n]:.4g} [{lo:.4g}, {hi:.4g}]" for n, (lo, hi) in res.ci.items()]
        if far is not None:
            lo, hi = res.predict_interval(far)
            cells.append(f"prediction {res.predict(far)[0]:.4g} [{lo[0]:.4g}, {hi[0]:.4g}]")
        print(f"  {kind} bootstrap: " + ", ".join(cells))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=200, help="synthetic data sets per study")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap refits per interval")
    ap.add_argument("--skip-published", action="store_true")
    ap.add_argument("--study", choices=["seeds", "ladder", "both"], default="both")
    args = ap.parse_args(argv)
    for name, study in (("seeds", Seeds), ("ladder", Ladder)):
        if args.study in (name, "both"):
            t0 = time.perf_counter()
            table = coverage(study, args.draws, args.resamples)
            _print_coverage(name, study, table, args.draws, time.perf_counter() - t0)
    if not args.skip_published:
        published_intervals(max(args.resamples, 1000))


if __name__ == "__main__":
    main()
