"""Benchmark: the vectorised JAX fitter against a scipy L-BFGS-B loop over the same starts.

    python -m fits.bench [--points 240] [--bootstrap 4000] [--skip-scipy]

Data: a Chinchilla-form law (Hoffmann et al.'s published E, A, B, alpha, beta) at `--points`
(N, D) pairs with 1 % log-normal noise, fixed seed.  Fit: Huber (delta 1e-3) on log loss from
Hoffmann et al.'s 4,500-start grid.  Prints the scipy loop time; the vectorised fitter's first
call, each in a fresh process (with this machine's compilation cache as it stands, then with an
empty cache folder, the same folder again, and with the cache off; fits.compilation), and the
median of five compiled calls; their ratios to the scipy loop; the difference of the objectives
reached; and the time of the bootstrap refits.  Run it twice to see this machine's cache cold,
then warm.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from fits import core, laws

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def synthetic_chinchilla(n_points: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n_points))
    D = N * np.exp(rng.uniform(np.log(2.0), np.log(200.0), n_points))  # 2..200 tokens/param
    L = TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]
    return {"N": N, "D": D}, L * np.exp(rng.normal(0.0, 0.01, n_points))


def huber_lse_objective(theta, logN, logD, logL, delta=1e-3):
    """Hoffmann et al.'s objective in numpy with its analytic gradient, the way the scipy
    replications write it: theta = (e, a, b, alpha, beta),
    sum Huber(LSE(a - alpha log N, b - beta log D, e) - log L)."""
    e, a, b, alpha, beta = theta
    z = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    m = z.max(axis=0)
    ez = np.exp(z - m)
    total = ez.sum(axis=0)
    r = m + np.log(total) - logL
    soft = ez / total
    absr = np.abs(r)
    value = np.sum(np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta)))
    psi = np.clip(r, -delta, delta)
    grad = np.array([np.sum(psi * soft[2]), np.sum(psi * soft[0]), np.sum(psi * soft[1]),
                     -np.sum(psi * soft[0] * logN), -np.sum(psi * soft[1] * logD)])
    return value, grad


def scipy_loop(x, y, starts_raw) -> tuple[float, np.ndarray]:
    """scipy L-BFGS-B from every start; returns the best objective and its raw parameters."""
    from scipy import optimize

    logN, logD, logL = np.log(x["N"]), np.log(x["D"]), np.log(y)
    best_f, best_theta = np.inf, None
    for theta0 in starts_raw:
        res = optimize.minimize(huber_lse_objective, theta0, args=(logN, logD, logL), jac=True,
                                method="L-BFGS-B")
        if res.fun < best_f:
            best_f, best_theta = float(res.fun), res.x
    return best_f, best_theta


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def first_call() -> dict:
    """In this (fresh) process: import JAX, then fit once; the times of both, as a dict."""
    x, y = synthetic_chinchilla(240)
    jax, t_import = _timed(lambda: __import__("jax"))
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compiles.append(seconds)
        if event == "/jax/core/compile/backend_compile_duration" else None)
    res, t_fit = _timed(lambda: core.fit("chinchilla", x, y, starts="grid", loss="huber",
                                         delta=1e-3))
    from fits import compilation

    return {"import_jax_s": t_import, "fit_s": t_fit, "objective": res.objective,
            "folder": compilation.folder(), "compiles": len(compiles),
            "compile_s": float(sum(compiles))}


def _first_call_in_fresh_process(cache: str | None) -> dict:
    """first_call() in a new Python process; cache: None leaves the environment as it is, else
    the value FITS_COMPILATION_CACHE takes (a folder, or 'off')."""
    env = dict(os.environ)
    if cache is not None:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env["FITS_COMPILATION_CACHE"] = cache
    done = subprocess.run([sys.executable, "-m", "fits.bench", "--first-call"], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _first_calls() -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as empty:
        return {"this machine's cache": _first_call_in_fresh_process(None),
                "empty cache folder": _first_call_in_fresh_process(empty),
                "same folder again": _first_call_in_fresh_process(empty),
                "no persistent cache": _first_call_in_fresh_process("off")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=240)
    ap.add_argument("--bootstrap", type=int, default=4000)
    ap.add_argument("--skip-scipy", action="store_true", help="skip the ~20 s reference loop")
    ap.add_argument("--first-call", action="store_true",
                    help="(internal) time one first fit in this process, print it as JSON")
    args = ap.parse_args(argv)
    if args.first_call:
        print(json.dumps(first_call()))
        return

    firsts = _first_calls()  # before this process compiles anything into the cache
    x, y = synthetic_chinchilla(args.points)
    kw = dict(starts="grid", loss="huber", delta=1e-3)
    core.fit("chinchilla", x, y, **kw)
    warm_runs = [_timed(lambda: core.fit("chinchilla", x, y, **kw)) for _ in range(5)]
    warm, t_warm = warm_runs[0][0], float(np.median([t for _, t in warm_runs]))
    print(f"points: {args.points}, starts: {warm.n_starts} (Hoffmann et al. grid)")
    print(f"vectorised LM (JAX), compiled: {t_warm:.2f} s (median of 5); "
          f"objective {warm.objective:.10g}")
    print("  params: " + ", ".join(f"{k}={v:.5g}" for k, v in warm.params.items()))
    _print_first_calls(firsts, args.points)
    if not args.skip_scipy:
        law = laws.get("chinchilla")
        starts_raw = law.to_raw(law.start_grid())  # the same 4,500 starts, same order
        (ref_f, _), t_ref = _timed(lambda: scipy_loop(x, y, starts_raw))
        print(f"scipy L-BFGS-B loop (numpy objective, analytic gradient): {t_ref:.2f} s; "
              f"objective {ref_f:.10g}")
        print(f"speed-up over the scipy loop: {t_ref / t_warm:.1f}x compiled")
        for name, first in firsts.items():
            print(f"  first call, fresh process, {name}: {t_ref / first['fit_s']:.1f}x "
                  f"({t_ref / (first['fit_s'] + first['import_jax_s']):.1f}x counting the "
                  f"import of JAX)")
        print(f"objective difference (JAX - scipy): {warm.objective - ref_f:.3e}")
    if args.bootstrap:
        _bootstrap_timing(x, y, warm, args.bootstrap, kw)


def _print_first_calls(firsts: dict[str, dict], n_points: int) -> None:
    if n_points != 240:
        print("(first calls below fit the default 240 points)")
    for name, first in firsts.items():
        where = "cache off" if first["folder"] is None else first["folder"]
        print(f"first call in a fresh process, {name} ({where}): {first['fit_s']:.2f} s, "
              f"{first['compiles']} XLA compilations taking {first['compile_s']:.2f} s "
              f"(+ {first['import_jax_s']:.2f} s importing JAX); objective "
              f"{first['objective']:.10g}")


def _bootstrap_timing(x, y, warm, n_resamples, kw) -> None:
    core.fit("chinchilla", x, y, starts=np.array([list(warm.params.values())]),
             bootstrap=min(64, n_resamples))  # compile the bootstrap kernels
    boot, t_boot = _timed(lambda: core.fit("chinchilla", x, y, bootstrap=n_resamples, **kw))
    print(f"{n_resamples} bootstrap refits (plus the grid fit): {t_boot:.2f} s, "
          f"{boot.n_bootstrap - sum(1 for d in boot.diagnostics if 'bootstrap' in d)} ok")
    print("  95% intervals: " + ", ".join(f"{k}=[{lo:.4g}, {hi:.4g}]"
                                          for k, (lo, hi) in boot.ci.items()))


if __name__ == "__main__":
    main()
