"""`fit()`: one law, one data set -> a `FitResult` with intervals, held-out errors and diagnostics.

    result = fit("log_law", D_p, bleu, holdout="smallest:4", bootstrap=1000)
    result.params, result.ci, result.heldout_error, result.diagnostics, result.predict(x)

Holdout (which points the fit does not see; their error is always reported):
  None           every point is fitted;
  "smallest:k"   fit the k points with the smallest first input, hold out the rest (Isik: k = 4);
  "largest:k"    hold out the k points with the largest first input;
  a bool array   True marks a held-out point.
Starts: "grid" (the law's default grid; Chinchilla's is Hoffmann et al.'s 4,500 points), an int
(that many random starts in the grid's box, raw scale), or an array of natural-scale starts.
Bounds: {name: (lower, upper)}, natural scale, None for an open side, e.g.
  fit("sigmoid_link", loss, accuracy, bounds={"b": (None, 1.0)})   # the ceiling stays below 1
They add to the law's own bounds (positivity, `Law.bounds`) and replace them for the parameters
they name.  Every start, step and bootstrap refit stays strictly inside (fits.bounds: a change of
variables, not clipping): a grid or random start outside is moved 1 % of the interval (or of the
bound's size) inside; an explicit start outside is an error.  A parameter that ends on a bound
is named in the diagnostics.
Bootstrap: `bootstrap` refits on resampled data give percentile intervals.  Points are resampled
one by one, or, with `bootstrap_groups` (one label per point, e.g. the pretraining run of each
checkpoint), whole groups at a time (a block bootstrap): points of one group share their errors,
and resampling them as independent points understates the uncertainty.
Errors: relative error pred/y - 1; `train_error` and `heldout_error` are its root mean square on
the fitted and on the held-out points.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from fits import engine
from fits import isik
from fits import laws as laws_lib

# Laws whose inputs may be zero or negative (the others take logs of their inputs).
_SIGNED_INPUT_LAWS = {"exp_link", "sigmoid_link", "fernandes_fraction"}


@dataclasses.dataclass
class FitResult:
    """A fitted law.  `params`, `ci` and `se` are on the natural scale, keyed by parameter name."""

    law: str
    formula: str
    param_names: tuple[str, ...]
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    se: dict[str, float]
    n_points: int
    n_fit: int
    train_error: float
    heldout_error: float
    objective: float
    loss: str
    delta: float
    status: str
    diagnostics: list[str]
    n_starts: int = 0
    n_converged: int = 0
    n_bootstrap: int = 0
    level: float = 0.95
    heldout_errors: list[float] = dataclasses.field(default_factory=list)
    fixed: dict[str, float] = dataclasses.field(default_factory=dict)
    n_groups: int = 0  # groups the block bootstrap resampled; 0 for a point bootstrap
    bounds: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    law_obj: Any = dataclasses.field(default=None, repr=False, compare=False)
    bootstrap_params: np.ndarray | None = dataclasses.field(default=None, repr=False,
                                                            compare=False)
    fit_mask: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def n_heldout(self) -> int:
        return self.n_points - self.n_fit

    def predict(self, x) -> np.ndarray:
        return self.law_obj.predict(self.params, x)

    def predict_interval(self, x, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile band of the prediction at x (NaN if the fit was not bootstrapped)."""
        level = self.level if level is None else level
        n = len(self.law_obj.inputs(x)[0])
        if self.bootstrap_params is None or len(self.bootstrap_params) == 0:
            return np.full(n, np.nan), np.full(n, np.nan)
        preds = np.stack([self.law_obj.predict(p, x) for p in self.bootstrap_params])
        lo, hi = np.nanpercentile(preds, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return lo, hi

    def to_dict(self) -> dict:
        return {
            "law": self.law, "formula": self.formula, "status": self.status,
            "params": dict(self.params), "ci": {k: list(v) for k, v in self.ci.items()},
            "se": dict(self.se), "fixed": dict(self.fixed), "n_points": self.n_points,
            "n_fit": self.n_fit, "n_heldout": self.n_heldout, "train_error": self.train_error,
            "heldout_error": self.heldout_error, "heldout_errors": list(self.heldout_errors),
            "objective": self.objective, "loss": self.loss, "delta": self.delta,
            "n_starts": self.n_starts, "n_converged": self.n_converged,
            "n_bootstrap": self.n_bootstrap, "n_groups": self.n_groups, "level": self.level,
            "bounds": {k: [None if math.isinf(b) else b for b in v]  # None: an open side
                       for k, v in self.bounds.items()},
            "diagnostics": list(self.diagnostics),
        }


# ----------------------------------------------------------------------------------------------
# Input checking
# ----------------------------------------------------------------------------------------------

def _resolve_law(law_or_name, x) -> laws_lib.Law:
    if isinstance(law_or_name, str) and law_or_name == "fernandes_joint":
        xs = x if isinstance(x, Mapping) or hasattr(x, "columns") else None
        if xs is None or "p" not in xs:
            raise ValueError("law 'fernandes_joint': x must be a dict/DataFrame with columns N, p")
        return laws_lib.fernandes_joint(np.unique(np.asarray(xs["p"], dtype=float)))
    if not isinstance(law_or_name, (str, laws_lib.Law)):
        raise ValueError(f"law must be a name or a Law, got {type(law_or_name).__name__}")
    return laws_lib.get(law_or_name)


def check_data(law: laws_lib.Law, x, y) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Validated float64 inputs and targets; ValueError names the offending field."""
    xs = law.inputs(x)
    y = np.asarray(y, dtype=float)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if len(xs[0]) != len(y):
        raise ValueError(f"x ({len(xs[0])} points) and y ({len(y)} points) have mismatched lengths")
    for name, col in zip(law.input_names, xs):
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            raise ValueError(f"x[{name!r}] has non-finite value {col[bad[0]]} at index {bad[0]}")
        if law.name not in _SIGNED_INPUT_LAWS and np.any(col <= 0):
            i = int(np.flatnonzero(col <= 0)[0])
            raise ValueError(f"x[{name!r}] must be > 0 (law {law.name!r} takes its log), "
                             f"got {col[i]} at index {i}")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise ValueError(f"y has non-finite value {y[bad[0]]} at index {bad[0]}")
    if law.log_target and np.any(y <= 0):
        i = int(np.flatnonzero(y <= 0)[0])
        raise ValueError(f"y must be > 0 (law {law.name!r} is fitted on log y), got {y[i]} "
                         f"at index {i}")
    return xs, y


def heldout_mask(holdout, order_key: np.ndarray) -> np.ndarray:
    """Bool mask, True for points the fit does not see."""
    n = len(order_key)
    if holdout is None or holdout is False:
        return np.zeros(n, dtype=bool)
    if isinstance(holdout, str):
        kind, _, k = holdout.partition(":")
        if kind not in ("smallest", "largest") or not k.strip().lstrip("-").isdigit():
            raise ValueError(f"holdout must be 'smallest:k', 'largest:k', a bool mask or None, "
                             f"got {holdout!r}")
        k = int(k)
        if k < 0 or k > n:
            raise ValueError(f"holdout {holdout!r}: k must be in [0, {n}], got {k}")
        order = np.argsort(order_key, kind="stable")
        mask = np.zeros(n, dtype=bool)
        if kind == "smallest":
            mask[order[k:]] = True
        elif k:
            mask[order[-k:]] = True
        return mask
    mask = np.asarray(holdout)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"holdout mask must be a bool array of shape ({n},), got dtype "
                         f"{mask.dtype} shape {mask.shape}")
    return mask.copy()


def _start_matrix(law, box, starts, free_idx, seed) -> np.ndarray:
    """Raw-scale starts for the free parameters, shape (S, n_free), strictly inside the bounds."""
    free = list(free_idx)
    if starts is None or (isinstance(starts, str) and starts == "grid"):
        natural = box.move_inside(law.start_grid())
    elif isinstance(starts, (int, np.integer)) and not isinstance(starts, bool):
        natural = box.move_inside(_random_starts(law, int(starts), seed))
    elif isinstance(starts, str):
        raise ValueError(f"starts must be None, 'grid', an int or an array, got {starts!r}")
    else:
        natural = _explicit_starts(law, box, starts, free)
    return np.unique(box.to_raw(natural)[:, free], axis=0)


def _random_starts(law, n: int, seed: int) -> np.ndarray:
    """n natural-scale starts drawn uniformly on the raw scale of the law's grid box."""
    if n < 1:
        raise ValueError(f"starts must be >= 1, got {n}")
    grid_raw = law.to_raw(law.start_grid())
    lo, hi = grid_raw.min(axis=0), grid_raw.max(axis=0)
    lo, hi = np.where(hi > lo, lo, lo - 1.0), np.where(hi > lo, hi, hi + 1.0)
    return law.to_natural(np.random.default_rng(seed).uniform(lo, hi, size=(n, law.n_params)))


def _explicit_starts(law, box, starts, free) -> np.ndarray:
    """Natural-scale starts given by the caller, full width; each must lie inside the bounds."""
    arr = np.atleast_2d(np.asarray(starts, dtype=float))
    if arr.ndim != 2 or arr.shape[1] not in (law.n_params, len(free)):
        raise ValueError(f"starts has shape {arr.shape}, expected (n, {law.n_params}) "
                         f"(or (n, {len(free)}) for the free parameters)")
    if not len(arr):
        raise ValueError("starts is empty")
    full = np.ones((len(arr), law.n_params))
    full[:, free] = arr[:, free] if arr.shape[1] == law.n_params else arr
    outside = ~box.inside(full)[:, free]
    if outside.any(axis=1).all():
        limits = ", ".join(f"{box.names[free[j]]} in {box.describe(free[j])}"
                           for j in np.flatnonzero(outside.any(axis=0)))
        raise ValueError(f"bounds exclude every start: no start lies strictly inside {limits}")
    for row, j in zip(*np.nonzero(outside)):
        name = box.names[free[j]]
        raise ValueError(f"starts: start {row} puts {name} = {full[row, free[j]]:g} outside its "
                         f"bounds {box.describe(free[j])} (starts must lie strictly inside)")
    return full


def _fit_box(law, bounds, fixed):
    """The fit's bounds.  A fixed value must lie inside its bounds; once checked, a fixed parameter
    keeps only the law's positivity, so its raw value maps back to it exactly."""
    box = law.box(bounds)
    for name, value in fixed.items():
        i = law.param_names.index(name)
        if not box.inside([value] * law.n_params)[i]:
            raise ValueError(f"fixed: {name} = {value:g} lies outside its bounds {box.describe(i)}")
    if not fixed:
        return box
    plain = law.box({n: (None, None) for n in law.param_names})
    is_fixed = np.isin(law.param_names, list(fixed))
    return dataclasses.replace(box, lower=np.where(is_fixed, plain.lower, box.lower),
                               upper=np.where(is_fixed, plain.upper, box.upper))


def _group_codes(bootstrap_groups, n_points: int, held: np.ndarray, bootstrap: int):
    """Integer group codes of the fitted points (None without groups); ValueError names a length
    mismatch, a missing label, and a single group where a block bootstrap needs several."""
    if bootstrap_groups is None:
        return None
    labels = list(np.asarray(bootstrap_groups, dtype=object).reshape(-1))
    if len(labels) != n_points:
        raise ValueError(f"bootstrap_groups has {len(labels)} labels for {n_points} points; "
                         f"give one label per point of x and y")
    for i, label in enumerate(labels):
        if label is None or (isinstance(label, float) and math.isnan(label)):
            raise ValueError(f"bootstrap_groups has a missing label at index {i}")
    codes = {}
    fitted = np.array([codes.setdefault(label, len(codes))
                       for label, h in zip(labels, held) if not h], dtype=np.int64)
    if bootstrap and len(codes) < 2:
        raise ValueError(f"bootstrap_groups: the fitted points form a single group "
                         f"({next(iter(codes), None)!r}); a block bootstrap resamples whole groups "
                         f"and needs at least 2")
    return fitted


# ----------------------------------------------------------------------------------------------
# fit()
# ----------------------------------------------------------------------------------------------

def fit(law_or_name, x, y, *, holdout=None, loss: str | None = None, delta: float | None = None,
        starts=None, bounds: Mapping[str, tuple] | None = None, bootstrap: int = 0,
        bootstrap_groups=None, seed: int = 0, fixed: Mapping[str, float] | None = None,
        level: float = 0.95, engine_name: str = "jax", max_iter: int = 300) -> FitResult:
    """Fit a law to (x, y); see the module docstring.  Raises ValueError on bad input only."""
    law = _resolve_law(law_or_name, x)
    xs, y = check_data(law, x, y)
    loss = law.default_loss if loss is None else loss
    delta = law.default_delta if delta is None else float(delta)
    _check_options(loss, delta, bootstrap, level, engine_name)
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(law.param_names)
    if unknown:
        raise ValueError(f"fixed names unknown parameters {sorted(unknown)} of law {law.name!r}")
    free_idx = tuple(i for i, n in enumerate(law.param_names) if n not in fixed)
    if not free_idx:
        raise ValueError(f"fixed: every parameter of law {law.name!r} is fixed; nothing to fit")
    held = heldout_mask(holdout, xs[0])
    n_fit = int((~held).sum())
    if n_fit < len(free_idx):
        raise ValueError(f"fewer points than parameters: {n_fit} points to fit, "
                         f"{len(free_idx)} free parameters of law {law.name!r}")
    groups = _group_codes(bootstrap_groups, len(y), held, bootstrap)
    box = _fit_box(law, bounds, fixed)
    base_natural = np.array([fixed.get(n, 1.0) for n in law.param_names])
    problem = engine.Problem(
        law=law, xs=tuple(c[~held] for c in xs),
        target=np.log(y[~held]) if law.log_target else y[~held],
        base_raw=np.where(np.isin(law.param_names, list(fixed)), box.to_raw(base_natural), 0.0),
        free_idx=free_idx, loss=loss, delta=delta, box=box)
    theta0 = _start_matrix(law, box, starts, free_idx, seed)
    solver = engine.minimize_lm if engine_name == "jax" else engine.minimize_scipy
    batch = solver(problem, theta0, max_iter=max_iter)
    request = _Request(law=law, problem=problem, xs=xs, y=y, held=held, fixed=fixed,
                       bootstrap=int(bootstrap), groups=groups, seed=seed, level=level,
                       max_iter=max_iter)
    return _assemble(request, batch)


@dataclasses.dataclass
class _Request:
    """What a fit was asked for, as `_assemble` needs it."""

    law: laws_lib.Law
    problem: engine.Problem
    xs: tuple[np.ndarray, ...]
    y: np.ndarray
    held: np.ndarray
    fixed: dict[str, float]
    bootstrap: int
    groups: np.ndarray | None
    seed: int
    level: float
    max_iter: int


def _check_options(loss, delta, bootstrap, level, engine_name) -> None:
    if loss not in ("huber", "lsq"):
        raise ValueError(f"loss must be 'huber' or 'lsq', got {loss!r}")
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"delta must be a positive number, got {delta}")
    if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if engine_name not in ("jax", "scipy"):
        raise ValueError(f"engine_name must be 'jax' or 'scipy', got {engine_name!r}")


def _assemble(req: _Request, batch) -> FitResult:
    law, problem, held, y = req.law, req.problem, req.held, req.y
    finite = np.isfinite(batch.objective)
    common = dict(law=law.name, formula=law.latex, param_names=law.param_names,
                  n_points=len(y), n_fit=int((~held).sum()), loss=problem.loss,
                  delta=problem.delta, n_starts=len(batch.objective),
                  n_converged=int(batch.converged.sum()), level=req.level, fixed=dict(req.fixed),
                  law_obj=law, fit_mask=~held, bounds=_declared_bounds(law, problem.box))
    if not finite.any():
        nan_params = {n: math.nan for n in law.param_names}
        return FitResult(params=nan_params, ci={}, se={}, train_error=math.nan,
                         heldout_error=math.nan, objective=math.nan, status="failed",
                         diagnostics=["fit failed: the objective is not finite at any start"],
                         **common)
    # The lowest objective wins even unconverged (then the fit is marked failed): a better
    # converged start would have ended lower, and a start still descending towards a limit is
    # the fit a user would otherwise never see.
    pool = np.flatnonzero(finite)
    best = pool[np.argmin(batch.objective[pool])]
    theta = batch.theta[best]
    params = _natural_params(law, problem, theta)
    pred = law.predict(params, req.xs)
    rel = pred / y - 1.0
    train_error = _rms(rel[~held])
    heldout_error = _rms(rel[held]) if held.any() else math.nan
    boot = _bootstrap(req, theta) if req.bootstrap else None
    ci = {}
    if boot is not None and len(boot):
        lo, hi = np.percentile(boot, [50 * (1 - req.level), 50 * (1 + req.level)], axis=0)
        ci = {n: (float(lo[i]), float(hi[i])) for i, n in enumerate(law.param_names)
              if n not in req.fixed}
    status = "ok" if np.isfinite(pred[~held]).all() and batch.converged[best] else "failed"
    diagnostics = _diagnostics(req, batch, best, params, train_error, heldout_error, boot, status)
    n_groups = 0 if req.groups is None or not req.bootstrap else int(req.groups.max()) + 1
    result = FitResult(params=params, ci=ci, se=_standard_errors(law, problem, theta),
                       train_error=train_error, heldout_error=heldout_error,
                       objective=float(batch.objective[best]), status=status,
                       diagnostics=diagnostics, n_bootstrap=req.bootstrap, n_groups=n_groups,
                       heldout_errors=[float(v) for v in rel[held]],
                       bootstrap_params=boot, **common)
    result.diagnostics += _isik_note(result, req.xs[0], y)
    return result


def _isik_note(result: FitResult, x: np.ndarray, y: np.ndarray) -> list[str]:
    """For a log-law, the half of Isik et al.'s rule a single fit can judge, by fits.isik's
    criteria; whether cross-entropy improves (misaligned) needs the CE curve: the report's
    isik_rule column."""
    if result.law != "log_law":
        return []
    reasons = isik.log_law_failures(result, x, y)
    if not reasons:
        return []
    return [f"log-law does not hold ({'; '.join(reasons)}): per Isik et al. pretraining data "
            f"misaligned with the task if downstream cross-entropy still improves"]


def _declared_bounds(law, box) -> dict[str, tuple[float, float]]:
    """The bounds beyond the law's positivity, as (lower, upper) with infinities for open sides."""
    plain = law.box({n: (None, None) for n in law.param_names})
    return {n: (float(box.lower[i]), float(box.upper[i])) for i, n in enumerate(law.param_names)
            if box.lower[i] != plain.lower[i] or box.upper[i] != plain.upper[i]}


def _natural_params(law, problem, theta) -> dict[str, float]:
    raw = problem.base_raw.copy()
    raw[list(problem.free_idx)] = theta
    nat = problem.box.to_natural(raw)
    return {n: float(v) for n, v in zip(law.param_names, nat)}


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(v)))) if v.size else math.nan


def _bootstrap(req: _Request, theta) -> np.ndarray:
    """Natural-scale parameters of `req.bootstrap` refits on resampled data, all lanes of one LM
    batch, started from the full-data optimum (moved off any bound it sits on, where a refit could
    not leave it).  Failed resamples are dropped."""
    problem = req.problem
    weights = _resample_weights(req.groups, len(problem.target), req.bootstrap, req.seed)
    theta0 = np.repeat(problem.box.seed(theta, problem.free_idx)[None, :], req.bootstrap, axis=0)
    out = engine.minimize_lm(problem, theta0, weights, max_iter=req.max_iter, merge=False)
    good = np.isfinite(out.objective) & out.converged
    raws = np.repeat(problem.base_raw[None, :], good.sum(), axis=0)
    raws[:, list(problem.free_idx)] = out.theta[good]
    return problem.box.to_natural(raws)


def _resample_weights(groups, n_points: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_points) point weights: how often each point is drawn.  Without groups,
    points are drawn one by one; with groups, whole groups are drawn (as many draws as there are
    groups) and every point of a group takes its group's count."""
    rng = np.random.default_rng(seed + 1)
    if groups is None:
        return rng.multinomial(n_points, np.full(n_points, 1.0 / n_points),
                               size=n_resamples).astype(np.float64)
    n_groups = int(groups.max()) + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    return counts[:, groups].astype(np.float64)


def _standard_errors(law, problem, theta) -> dict[str, float]:
    """Gauss-Newton standard errors s^2 (J^T J)^-1 from the residual variance, mapped to the
    natural scale by the delta method (approximate under Huber; NaN when J is rank-deficient)."""
    r, J = engine.jacobian(problem, theta)
    n, p = J.shape
    names = [law.param_names[i] for i in problem.free_idx]
    if n <= p or not np.all(np.isfinite(J)) or not np.all(np.isfinite(r)):
        return {nm: math.nan for nm in names}
    with np.errstate(all="ignore"):
        try:
            cov = np.linalg.inv(J.T @ J) * float(r @ r) / (n - p)
        except np.linalg.LinAlgError:
            return {nm: math.nan for nm in names}
    out = {}
    slope = problem.box.slope(_full_raw(problem, theta))
    on_bound = problem.box.side_reached(problem.box.to_natural(_full_raw(problem, theta)))
    for j, i in enumerate(problem.free_idx):
        se_raw = math.sqrt(cov[j, j]) if cov[j, j] >= 0 else math.nan
        # on a bound the raw scale is flat: no local standard error
        with np.errstate(all="ignore"):
            out[law.param_names[i]] = math.nan if on_bound[i] else float(se_raw * abs(slope[i]))
    return out


def _full_raw(problem, theta) -> np.ndarray:
    raw = problem.base_raw.copy()
    raw[list(problem.free_idx)] = theta
    return raw


def _diagnostics(req: _Request, batch, best, params, train_error, heldout_error, boot,
                 status) -> list[str]:
    law, problem, bootstrap = req.law, req.problem, req.bootstrap
    notes = []
    if not batch.converged[best]:
        notes.append("fit failed: the best start had not converged when its iteration budget "
                     "(max_iter) ran out")
    elif status == "failed":
        notes.append("fit failed: the fitted law predicts non-finite values at the data")
    notes += _bound_notes(law, problem, batch.theta[best], params)
    notes += _start_disagreement(law, problem, batch, best)
    notes += _best_converged_is_worse(law, problem, batch, best)
    if (math.isfinite(heldout_error) and heldout_error > 0.02
            and heldout_error > 5 * max(train_error, 1e-12)):
        notes.append(f"held-out error {heldout_error:.3g} far above in-sample {train_error:.3g}")
    notes += _monotonicity(law, req.xs, req.y)
    if len(problem.target) == len(problem.free_idx):
        notes.append("as many points as parameters: an interpolation, no residual left to judge")
    if bootstrap and boot is not None and len(boot) < bootstrap:
        notes.append(f"{bootstrap - len(boot)} of {bootstrap} bootstrap refits failed")
    notes += _few_groups(req.groups if bootstrap else None)
    return notes  # a log-law's Isik note follows from fits.isik's criteria, in _isik_note


def _bound_notes(law, problem, theta, params) -> list[str]:
    """Parameters that end on a bound, or run away towards infinity where no bound holds them."""
    box = problem.box
    sides = box.side_reached([params[n] for n in law.param_names])
    notes = []
    for j, i in enumerate(problem.free_idx):
        name, side = law.param_names[i], sides[i]
        if side == "lower" and box.lower[i] == 0.0:
            notes.append(f"{name} at its bound (-> 0)")
        elif side:
            bound = box.lower[i] if side == "lower" else box.upper[i]
            notes.append(f"{name} at its {side} bound ({bound:g})")
        elif box.kind(i) == "none" and abs(theta[j]) > 50 or box.kind(i) == "one" and theta[j] > 50:
            notes.append(f"{name} runs away ({params[name]:.3g})")
    return notes


def _few_groups(groups) -> list[str]:
    """A block bootstrap over few groups has few distinct resamples to take percentiles of."""
    if groups is None:
        return []
    n_groups = int(groups.max()) + 1
    distinct = math.comb(2 * n_groups - 1, n_groups)
    if distinct >= 100:
        return []
    return [f"block bootstrap over {n_groups} groups: its intervals rest on at most {distinct} "
            f"distinct resamples"]


def _start_disagreement(law, problem, batch, best) -> list[str]:
    """Starts that reach the best objective (to 1e-6 relative) but different parameters."""
    f_best = batch.objective[best]
    near = batch.converged & (batch.objective <= f_best + 1e-6 * max(abs(f_best), 1e-12))
    if near.sum() < 2:
        return []
    raws = np.repeat(problem.base_raw[None, :], near.sum(), axis=0)
    raws[:, list(problem.free_idx)] = batch.theta[near]
    values = problem.box.to_natural(raws)  # natural scale: lanes on one bound agree there
    spread = values.max(axis=0) - values.min(axis=0)
    notes = []
    for i in problem.free_idx:
        # 1 % of the largest value (at least 1e-3 for parameters that are not positive)
        floor = 0.0 if law.positive[i] else 1e-3
        if spread[i] > 0.01 * max(np.abs(values[:, i]).max(), floor):
            notes.append(f"starts disagree on {law.param_names[i]} at the same objective "
                         f"(flat optimum)")
    return notes


def _best_converged_is_worse(law, problem, batch, best) -> list[str]:
    """When the best start was cut short by the iteration budget, the best converged start is
    usually a different, worse fit: the best is descending towards a limit (parameters at infinity
    or zero) rather than to a finite optimum.  Say how much worse, and where they differ most."""
    done = np.flatnonzero(batch.converged & np.isfinite(batch.objective))
    if batch.converged[best] or done.size == 0:
        return []
    other = done[np.argmin(batch.objective[done])]
    moved = np.abs(batch.theta[other] - batch.theta[best])
    names = [law.param_names[problem.free_idx[j]] for j in np.argsort(-moved)[:3]]
    return [f"the best converged start reaches only {batch.objective[other]:.4g} (vs "
            f"{batch.objective[best]:.4g}), differing most in {', '.join(names)}: the optimum may "
            f"lie at a limit"]


def _monotonicity(law, xs, y) -> list[str]:
    if law.monotone == 0 or law.n_inputs != 1 or len(y) < 3:
        return []
    order = np.argsort(xs[0], kind="stable")
    steps = np.diff(y[order]) * law.monotone
    tol = 0.01 * (np.ptp(y) + 1e-300)
    wrong = int((steps < -tol).sum())
    if not wrong:
        return []
    direction = "increasing" if law.monotone > 0 else "decreasing"
    return [f"data not monotone {direction} as the law is ({wrong} of {len(steps)} steps reverse)"]
