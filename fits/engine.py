"""Optimisers: a batched Levenberg-Marquardt in JAX (the fast path) and a scipy loop (the reference).

The objective is  sum_i w_i rho(r_i)  with r_i the residual of point i (log(pred) - log(y) for laws
with `log_target`, else pred - y), rho the Huber function (or 0.5 r^2 for least squares) and w_i
point weights (0/1 for held-out points, multinomial counts for bootstrap resamples).

Fast path: every start (or every bootstrap resample) is one lane of a `jax.vmap`.  Each iteration
solves the Gauss-Newton system on iteratively re-weighted Huber weights  s_i = min(1, delta/|r_i|)
(whose gradient J^T(s r) is exactly the Huber gradient), damped as in Marquardt, by an unrolled
Cholesky; a step is kept only if it lowers the true objective.  Residuals and Jacobian (one
forward-mode pass) are carried from the accepted point, so an iteration evaluates the law once.
(A vmapped line-search L-BFGS runs every lane at the slowest lane's pace and was measured slower
than a scipy loop; LM needs no line search.)

Work shrinks as starts converge.  Iterations run in jitted chunks (1, 1, 2, 4, then 8 iterations)
over blocks of a fixed lane count, and the points are padded (with weight 0) to a power of two, so
a few compilations serve every fit of a law.  Between chunks, a lane stops when its step passes the
per-step tolerance, when a chunk of accepted steps gained less than _STALL_RTOL, or when its
damping exceeds _LAM_MAX; and a lane merges into a better one when their parameters agree to
_MERGE_TOL or their residuals agree to RMS _MERGE_RESID (the same curve, possibly along a flat
valley of the parameters).  Screening over, the best _N_POLISH distinct lanes are re-opened and run
to the strict per-step tolerance.  A merged start reports the optimum of the lane it joined.

Bounds (fits.bounds) are a change of variables inside the residual function, so every lane
honours them; the bounds travel as data, so one compilation serves a law under any bounds.  A
lane's step on a two-sided bound's raw scale is capped at _BOUNDED_STEP: the sigmoid is nearly
flat far out, so one uncapped Gauss-Newton step can land a lane on a bound it never leaves.

All of it runs in float64 inside `jax.enable_x64(True)`, scoped to these calls: the rest of the
process keeps JAX's float32 default.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fits import bounds as bounds_lib
from fits import compilation
from fits import laws as laws_lib

_FTOL = 1e-10  # relative objective decrease below which an accepted step counts as converged
_LAM0, _LAM_MAX = 1e-3, 1e10
_MERGE_TOL = 1e-2  # raw scale: 1 % for positive parameters
_STALL_RTOL = 1e-7  # screening: relative gain per chunk below which a lane stops
_N_POLISH = 8  # distinct best lanes run to the strict tolerance after screening
_MERGE_RESID = 1e-3  # RMS residual difference (log scale: 0.1 %) at which two lanes merge
_CLUSTER_MAX = 2048  # most lanes compared pairwise when merging (memory: its square)
_CLUSTER_RESID = 1e3  # largest residual of a lane compared pairwise
_SMALL_BLOCK = 32  # lanes per call once few remain
_MIN_POINTS = 8  # smallest bucket of points
_FIRST_CHUNKS = (1, 1, 2, 4)  # iterations in the first chunks, before `chunk` applies
_BLOCK = 256  # lanes per compiled call; larger batches run as several calls of this size
_BOUNDED_STEP = 8.0  # largest step on the raw (logit) scale of a two-sided bound


@dataclasses.dataclass
class Problem:
    """What the optimisers need: the law, which parameters move, the data and the objective."""

    law: laws_lib.Law
    xs: tuple[np.ndarray, ...]      # inputs of the points in the objective
    target: np.ndarray              # log(y) or y
    base_raw: np.ndarray            # full raw parameter vector; free entries are overwritten
    free_idx: tuple[int, ...]
    loss: str = "huber"
    delta: float = 1e-3
    box: bounds_lib.Box | None = None  # the raw scale of every parameter; None: the law's own

    def __post_init__(self):
        if self.box is None:
            self.box = self.law.box()

    @property
    def log_target(self) -> bool:
        return self.law.log_target


def _rho(r, loss, delta, xp):
    if loss == "lsq":
        return 0.5 * r * r
    a = xp.abs(r)
    return xp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _predict_log_or_raw(law, nat, xs, log_target, xp):
    p = tuple(nat[i] for i in range(law.n_params))
    if not log_target:
        return law.model(p, xs, xp)
    if law.log_model is not None:
        return law.log_model(p, xs, xp)
    return xp.log(law.model(p, xs, xp))


@functools.lru_cache(maxsize=64)
def _kernels(law, free_idx, loss, delta):
    """Jitted single-lane residual/objective and the vmapped LM chunk, cached per law and setting."""
    import jax
    import jax.numpy as jnp

    free = np.array(free_idx, dtype=np.int32)

    def resid(theta, space, xs, t):
        base, lower, upper = space
        raw = base.at[free].set(theta)
        nat = bounds_lib.to_natural(raw, lower, upper, jnp)
        return _predict_log_or_raw(law, nat, xs, law.log_target, jnp) - t

    def objective_of(r, w):
        val = jnp.sum(jnp.where(w > 0, w * _rho(r, loss, delta, jnp), 0.0))
        return jnp.where(jnp.isfinite(val), val, jnp.inf)

    def objective(theta, space, xs, t, w):
        return objective_of(resid(theta, space, xs, t), w)

    def resid_jac(theta, space, xs, t):
        """Residuals and their Jacobian from one forward-mode pass (the residuals ride as aux)."""
        J, r = jax.jacfwd(lambda th: (resid(th, space, xs, t),) * 2, has_aux=True)(theta)
        return r, J

    def capped(step, space):
        _, lower, upper = space
        cap = jnp.where(jnp.isfinite(lower) & jnp.isfinite(upper), _BOUNDED_STEP, jnp.inf)[free]
        return step * jnp.minimum(1.0, jnp.min(cap / jnp.maximum(jnp.abs(step), 1e-300)))

    def lm_step(carry, space, xs, t, w):
        # The residuals and Jacobian of the current point are carried, so each trip evaluates the
        # law once, at the trial point, and keeps that evaluation if the step is accepted.  A
        # chunk's first trip (fresh False) takes no step: it only evaluates the current point, so
        # lanes need no objective up front and the loop holds the law's only evaluation site.
        theta, lam, f, done, r, J, fresh = carry
        use = (w > 0) & jnp.isfinite(r) & jnp.all(jnp.isfinite(J), axis=1)
        r0 = jnp.where(use, r, 0.0)
        J0 = jnp.where(use[:, None], J, 0.0)
        if loss == "huber":
            s = w * jnp.minimum(1.0, delta / jnp.maximum(jnp.abs(r0), 1e-300))
        else:
            s = w
        s = jnp.where(use, s, 0.0)
        JtS = J0.T * s[None, :]
        H, g = JtS @ J0, JtS @ r0
        diag = jnp.diag(H)
        damp = lam * (diag + 1e-12 * jnp.max(diag) + 1e-300)
        step = jnp.where(fresh, capped(_spd_solve(H + jnp.diag(damp), -g), space), 0.0)
        trial = theta + step
        r_trial, J_trial = resid_jac(trial, space, xs, t)
        f_trial = objective_of(r_trial, w)
        improved = (jnp.isfinite(f_trial) & (f_trial <= f) & jnp.all(jnp.isfinite(step))
                    & ~done & fresh)
        small = (f - f_trial) <= _FTOL * jnp.maximum(f, 1e-300)
        tiny_step = jnp.max(jnp.abs(step) / (jnp.abs(theta) + 1e-8)) < 1e-12
        keep = improved | ~fresh
        theta = jnp.where(keep, trial, theta)
        f = jnp.where(keep, f_trial, f)
        r = jnp.where(keep, r_trial, r)
        J = jnp.where(keep, J_trial, J)
        lam = jnp.where(fresh, jnp.clip(jnp.where(improved, lam * 0.3, lam * 5.0), 1e-12, _LAM_MAX),
                        lam)
        done = done | (improved & (small | tiny_step)) | (lam >= _LAM_MAX) | ~jnp.isfinite(f)
        return theta, lam, f, done, r, J, jnp.ones_like(fresh)

    def lanes(w_axis):
        """A chunk of n_iter LM iterations on a batch of lanes.  The loop runs over the vmapped
        step, not vmap over the loop: the trip count is shared by all lanes, and batching the step
        once traces several times faster than the while loop's batching rule (it re-batches the
        body until the carry's batched-ness settles), which is most of a first fit's cost once
        compilation is cached."""
        step = jax.vmap(lm_step, in_axes=(0, None, None, None, w_axis))

        def chunk(theta, lam, f, done, space, xs, t, w, n_iter):
            r = jnp.zeros(theta.shape[:1] + t.shape, t.dtype)
            J = jnp.zeros(theta.shape[:1] + t.shape + theta.shape[1:], t.dtype)
            fresh = jnp.zeros(theta.shape[:1], bool)
            out = jax.lax.fori_loop(0, n_iter + 1, lambda _, c: step(c, space, xs, t, w),
                                    (theta, lam, f, done, r, J, fresh))
            return out[:4]

        # n_iter is traced (not static): every chunk length shares one compilation
        return jax.jit(chunk)

    lanes_shared_w, lanes_own_w = lanes(None), lanes(0)
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    resid_lanes = jax.jit(jax.vmap(resid, in_axes=(0, None, None, None)))
    resid_and_jac = jax.jit(resid_jac)
    return dict(lanes_shared_w=lanes_shared_w, lanes_own_w=lanes_own_w,
                value_and_grad=value_and_grad,
                resid_and_jac=resid_and_jac, resid_lanes=resid_lanes)


def _spd_solve(A, b):
    """Solve A x = b for a small symmetric positive definite A by an unrolled Cholesky.  Under vmap
    this is plain elementwise arithmetic across lanes, ~4x faster on CPU than a batched LAPACK
    solve of 5x5 systems; larger systems go to jnp.linalg.solve."""
    import jax.numpy as jnp

    n = A.shape[-1]
    if n > 12:
        return jnp.linalg.solve(A, b)
    L = [[None] * n for _ in range(n)]
    for j in range(n):
        L[j][j] = jnp.sqrt(jnp.maximum(A[j, j] - sum(L[j][k] ** 2 for k in range(j)), 1e-300))
        for i in range(j + 1, n):
            L[i][j] = (A[i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    y = [None] * n
    for i in range(n):
        y[i] = (b[i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i]
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(L[k][i] * x[k] for k in range(i + 1, n))) / L[i][i]
    return jnp.stack(x)


def kernels(problem: Problem) -> dict:
    """The problem's kernels, each compiled once per argument shape through fits.compilation (so a
    new process loads them from disk rather than tracing and compiling them)."""
    jitted = _kernels(problem.law, tuple(problem.free_idx), problem.loss, float(problem.delta))
    law_identity = compilation.law_identity(problem.law)
    identity = None if law_identity is None else repr(
        (law_identity, tuple(problem.free_idx), problem.loss, float(problem.delta)))
    return {name: functools.partial(_launch, name, fn, identity) for name, fn in jitted.items()}


def _launch(name, jitted, identity, *args):
    return compilation.call(name, jitted, args, identity)


def _bucket(n: int, smallest: int) -> int:
    """n rounded up to a power of two (at least `smallest`): shapes from a few buckets let fits of
    different sizes share one compilation."""
    return max(smallest, 1 << max(0, int(n) - 1).bit_length())


def _block_size(n_active: int, n_lanes: int) -> int:
    """Lanes per compiled call: the batch's bucket up to _BLOCK (larger batches run as several
    calls), and _SMALL_BLOCK once few lanes remain, so a long tail does not pay for padding."""
    block = min(_BLOCK, _bucket(n_lanes, _SMALL_BLOCK))
    if block > 2 * _SMALL_BLOCK and n_active <= _SMALL_BLOCK:
        return _SMALL_BLOCK
    return block


def _padded_data(problem: Problem, weights: np.ndarray):
    """Inputs, targets and weights padded to a bucket of points with weight-0 copies of the first
    point (weight 0 removes a point from the objective and the normal equations)."""
    n = len(problem.target)
    pad = _bucket(n, _MIN_POINTS) - n
    xs = tuple(np.concatenate([c, np.full(pad, c[0])]) for c in problem.xs)
    t = np.concatenate([problem.target, np.full(pad, problem.target[0])])
    widths = [(0, 0)] * (weights.ndim - 1) + [(0, pad)]
    return xs, t, np.pad(weights, widths)


def _device_data(problem: Problem, xs, t):
    """Inputs, targets and the parameter space (base raw vector, lower and upper bounds) as float64
    JAX arrays (call under enable_x64)."""
    import jax

    # device_put, not jnp.asarray: the latter compiles a small program per new shape
    def put(v):
        return jax.device_put(np.asarray(v, dtype=np.float64))

    space = (problem.base_raw, problem.box.lower, problem.box.upper)
    return tuple(put(c) for c in xs), put(t), tuple(put(v) for v in space)


def _run_blocks(k, active, theta, lam, f, done, weights, own_w, space, xs, t, chunk, n_lanes):
    """One chunk of LM iterations on the active lanes, in blocks of one fixed size (so a shrinking
    active set never triggers a recompilation), dispatched asynchronously, then gathered."""
    block = _block_size(active.size, n_lanes)
    n_blocks = -(-active.size // block)
    idx = np.concatenate([active, np.full(n_blocks * block - active.size, active[0])])
    pad = np.arange(idx.size) >= active.size
    outs = []
    for b in range(n_blocks):
        sl = idx[b * block:(b + 1) * block]
        args = (theta[sl], lam[sl], f[sl], done[sl] | pad[b * block:(b + 1) * block], space, xs, t,
                weights[sl] if own_w else weights, np.int32(chunk))
        outs.append(k["lanes_own_w" if own_w else "lanes_shared_w"](*args))
    return tuple(np.concatenate([np.asarray(o[i]) for o in outs]) for i in range(4))


@dataclasses.dataclass
class BatchResult:
    theta: np.ndarray      # (B, P) raw free parameters
    objective: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    iterations: int


def minimize_lm(problem: Problem, theta0_BP: np.ndarray, weights=None, *, max_iter: int = 300,
                chunk: int = 8, merge: bool = True) -> BatchResult:
    """Batched LM from every row of theta0_BP.

    weights: None (all ones), shape (N,) shared by all lanes, or (B, N) one vector per lane
    (bootstrap resamples).  merge: drop lanes whose parameters coincide with a better lane's.
    """
    import jax

    theta = np.array(theta0_BP, dtype=np.float64)
    n_lanes = theta.shape[0]
    n_points = len(problem.target)
    if weights is None:
        weights = np.ones(n_points)
    weights = np.asarray(weights, dtype=np.float64)
    own_w = weights.ndim == 2
    k = kernels(problem)
    xs_np, t_np, weights = _padded_data(problem, weights)
    with jax.enable_x64(True):
        xs, t, space = _device_data(problem, xs_np, t_np)
        lane_weights = weights if own_w else jax.device_put(weights)
        # each chunk first evaluates its lanes (see lm_step): no objective is needed up front
        f = np.full(n_lanes, np.inf)
        lam = np.full(n_lanes, _LAM0)
        done = np.zeros(n_lanes, dtype=bool)
        merged_into = np.arange(n_lanes)
        iterations = n_chunks = 0
        polishing = False
        unfinished = np.zeros(n_lanes, dtype=bool)  # lanes the iteration budget cut short
        while True:
            active = np.flatnonzero(~done)
            if iterations >= max_iter:
                unfinished[active] = True
                done[active] = True
                active = active[:0]
            if active.size == 0:
                if polishing or own_w:
                    break
                # Screening done: re-open the best few distinct lanes and run them, with a fresh
                # budget, to the strict per-step tolerance without the stall test.
                polishing, iterations = True, 0
                active = _best_distinct(f, merged_into, _N_POLISH)
                if active.size == 0:
                    break
                done[active], unfinished[active] = False, False
                lam[active] = _LAM0
            # short first chunks let merging thin a large batch early
            chunk_now = _FIRST_CHUNKS[n_chunks] if n_chunks < len(_FIRST_CHUNKS) else chunk
            chunk_now = min(chunk_now, chunk, max_iter - iterations)
            n_chunks += 1
            th, la, fo, do = _run_blocks(k, active, theta, lam, f, done, lane_weights, own_w,
                                         space, xs, t, chunk_now, n_lanes)
            n = active.size
            f_before = f[active]
            theta[active], lam[active], f[active], done[active] = th[:n], la[:n], fo[:n], do[:n]
            if not polishing:
                # A chunk whose accepted steps gained less than _STALL_RTOL counts as converged
                # (screening).  No gain at all means only rejected steps: the damping grows
                # until a step is accepted or _LAM_MAX ends the lane.
                with np.errstate(invalid="ignore"):  # inf - inf before a lane's first chunk
                    gain = f_before - f[active]
                done[active] |= ((gain > 0) & (gain <= _STALL_RTOL * np.abs(f_before))
                                 & np.isfinite(f_before))
            iterations += chunk_now
            if merge and not own_w and not polishing:
                _merge_duplicates(theta, f, done, merged_into)
                _merge_same_predictions(k, theta, f, done, merged_into, space, xs, t, n_lanes,
                                        len(problem.target))
    # lanes merged into another take that lane's result
    root = merged_into.copy()
    while not np.array_equal(root, merged_into[root]):
        root = merged_into[root]
    converged = done & ~unfinished & np.isfinite(f)
    return BatchResult(theta=theta[root], objective=f[root], converged=converged[root],
                       iterations=iterations)


def _best_distinct(f, merged_into, k) -> np.ndarray:
    """Indices of the k lowest-objective lanes that were not merged into another."""
    own = np.flatnonzero((merged_into == np.arange(len(f))) & np.isfinite(f))
    return own[np.argsort(f[own], kind="stable")[:k]]


def _residual_lanes(k, lanes, theta, space, xs, t, n_lanes) -> np.ndarray:
    """Residuals (len(lanes), N) in blocks of one compiled size."""
    block = min(_BLOCK, _bucket(n_lanes, _SMALL_BLOCK))
    n_blocks = -(-lanes.size // block)
    idx = np.concatenate([lanes, np.full(n_blocks * block - lanes.size, lanes[0])])
    outs = [k["resid_lanes"](theta[idx[b * block:(b + 1) * block]], space, xs, t)
            for b in range(n_blocks)]
    return np.concatenate([np.asarray(o) for o in outs])[:lanes.size]


def _merge_same_predictions(k, theta, f, done, merged_into, space, xs, t, n_lanes, n_points):
    """Merge each active lane into a better one whose residuals are within RMS _MERGE_RESID of its
    own: both describe the same curve (possibly along a flat valley of the parameters), so only the
    best goes on.  Lanes equal on every point (rounded to _MERGE_RESID) go first, by hashing; the
    rest by a greedy clustering on the distances from one matrix product."""
    active = np.flatnonzero(~done)
    if active.size <= max(1, min(_SMALL_BLOCK, n_lanes - 1)):
        return
    r = _residual_lanes(k, active, theta, space, xs, t, n_lanes)[:, :n_points]
    r = np.where(np.isfinite(r), r, 1e300)
    order = np.argsort(f[active], kind="stable")
    kept = order[_merge_equal_keys(r[order] / _MERGE_RESID, active[order], merged_into, done)]
    # Distances by |a|^2 + |b|^2 - 2ab lose ~eps |r|^2 to cancellation: lanes with residuals
    # beyond _CLUSTER_RESID (far from any fit) stay out, which keeps that error below 1e-3 of
    # the merge threshold.
    kept = kept[np.max(np.abs(r[kept]), axis=1) <= _CLUSTER_RESID]
    if len(kept) < 2 or len(kept) > _CLUSTER_MAX:
        return
    rk = r[kept]
    sq = np.einsum("ij,ij->i", rk, rk)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (rk @ rk.T)  # squared distances, one matrix product
    # close[a, b]: lane b is better (earlier in `kept`) and its curve within RMS _MERGE_RESID
    close = np.tril(d2 < n_points * _MERGE_RESID ** 2, k=-1)
    for a, b in _greedy_representatives(close):
        merged_into[active[kept[a]]] = active[kept[b]]
        done[active[kept[a]]] = True


def _greedy_representatives(close: np.ndarray) -> list[tuple[int, int]]:
    """(lane, representative) pairs of the greedy clustering that walks the lanes best first and
    makes each lane a representative unless it is close to one already chosen; computed in a
    few rounds of matrix operations instead of a loop over lanes."""
    n = len(close)
    rep = np.zeros(n, dtype=bool)
    undecided = np.ones(n, dtype=bool)
    pairs = []
    while undecided.any():
        to_rep = close & rep[None, :]
        joins = undecided & to_rep.any(axis=1)
        starts = undecided & ~joins & ~(close & undecided[None, :]).any(axis=1)
        for a in np.flatnonzero(joins):
            pairs.append((a, int(np.argmax(to_rep[a]))))
        rep |= starts
        undecided &= ~(joins | starts)
    return pairs


def _merge_duplicates(theta, f, done, merged_into):
    """Mark active lanes whose raw parameters agree (to _MERGE_TOL) with a better lane as merged into
    it: such lanes sit in one basin, so only the best needs to keep iterating."""
    active = np.flatnonzero(~done)
    if active.size < 2:
        return
    order = np.argsort(f[active], kind="stable")
    _merge_equal_keys(theta[active[order]] / _MERGE_TOL, active[order], merged_into, done)


def _merge_equal_keys(scaled, lanes, merged_into, done) -> np.ndarray:
    """Merge each lane (rows in order of objective, best first) into the first lane whose `scaled`
    row rounds to the same integers; returns the positions of the lanes kept, in order.  One
    64-bit hash per row (wrapping integer arithmetic) stands for the row."""
    keys = np.round(np.clip(np.nan_to_num(scaled, nan=1e18), -1e18, 1e18)).astype(np.int64)
    hashes = keys @ np.random.default_rng(0).integers(1, 2 ** 62, keys.shape[1])
    _, first, which = np.unique(hashes, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first[which] != np.arange(len(lanes)))
    merged_into[lanes[dup]] = lanes[first[which[dup]]]
    done[lanes[dup]] = True
    return np.sort(first)


def minimize_scipy(problem: Problem, theta0_BP: np.ndarray, weights=None, *,
                   max_iter: int = 1000) -> BatchResult:
    """The reference: scipy L-BFGS-B in a Python loop over the starts (exact JAX gradients).

    It moves the parameters on the law's plain scale (log for positive ones, natural otherwise) and
    imposes the fit's other bounds as L-BFGS-B's box constraints, not by the change of variables
    of the fast path: the two reach a bounded optimum by different routes.  Its tolerances are
    tight (it is the reference), and theta comes back on the problem's raw scale."""
    import jax
    from scipy import optimize

    plain = _plain_problem(problem)
    k = kernels(plain)
    n_points = len(problem.target)
    w = np.ones(n_points) if weights is None else np.asarray(weights, dtype=np.float64)
    limits = _plain_limits(problem, plain)
    thetas, fs, oks = [], [], []
    with jax.enable_x64(True):
        xs, t, space = _device_data(plain, plain.xs, plain.target)
        wj = jax.device_put(w)

        def fun(theta):
            val, grad = k["value_and_grad"](np.asarray(theta, dtype=np.float64), space, xs, t, wj)
            val = float(val)
            if not np.isfinite(val):
                return 1e300, np.zeros_like(theta)
            return val, np.nan_to_num(np.asarray(grad, dtype=np.float64))

        for theta0 in np.asarray(theta0_BP, dtype=np.float64):
            res = optimize.minimize(fun, _rescale(problem, plain, theta0), jac=True,
                                    method="L-BFGS-B", bounds=limits,
                                    options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12})
            thetas.append(_rescale(plain, problem, res.x))
            fs.append(res.fun if res.fun < 1e300 else np.inf)
            # at machine precision the line search may stop short of its own tests: converged
            oks.append(bool(res.success) or "ABNORMAL" in str(res.message))
    return BatchResult(theta=np.array(thetas), objective=np.array(fs), converged=np.array(oks),
                       iterations=max_iter)


def _plain_problem(problem: Problem) -> Problem:
    """The problem on the law's plain scale: positivity kept, every other bound dropped."""
    law = problem.law
    box = law.box({n: (None, None) for n in law.param_names})
    base = box.to_raw(problem.box.to_natural(problem.base_raw))
    return dataclasses.replace(problem, box=box, base_raw=np.nan_to_num(base))


def _rescale(source: Problem, target: Problem, theta: np.ndarray) -> np.ndarray:
    """Free raw parameters of `source` on the raw scale of `target`."""
    raw = source.base_raw.copy()
    raw[list(source.free_idx)] = theta
    # exp(log(bound)) may land an ulp outside the bound: round it back onto the bound
    natural = np.clip(source.box.to_natural(raw), target.box.lower, target.box.upper)
    return target.box.to_raw(natural)[list(source.free_idx)]


def _plain_limits(problem: Problem, plain: Problem) -> list[tuple[float | None, float | None]]:
    """L-BFGS-B's (lower, upper) per free parameter: the problem's bounds on the plain scale."""
    limits = []
    for i in problem.free_idx:
        sides = []
        for bound, plain_bound in ((problem.box.lower[i], plain.box.lower[i]),
                                   (problem.box.upper[i], plain.box.upper[i])):
            if bound == plain_bound:  # the plain scale holds it already (or it is open)
                sides.append(None)
                continue
            full = np.ones(len(plain.base_raw))
            full[i] = bound
            sides.append(float(plain.box.to_raw(full)[i]))
        limits.append(tuple(sides))
    return limits


def jacobian(problem: Problem, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals and Jacobian (w.r.t. the free raw parameters) at theta."""
    import jax

    k = kernels(problem)
    n = len(problem.target)
    xs_np, t_np, _ = _padded_data(problem, np.ones(n))
    with jax.enable_x64(True):
        xs, t, space = _device_data(problem, xs_np, t_np)
        r, J = k["resid_and_jac"](np.asarray(theta, dtype=np.float64), space, xs, t)
        return np.array(r)[:n], np.array(J)[:n]


def objective_np(problem: Problem, theta: np.ndarray, weights=None) -> float:
    """The objective at one parameter vector, in numpy (for checks against published values)."""
    raw = problem.base_raw.copy()
    raw[list(problem.free_idx)] = theta
    nat = problem.box.to_natural(raw)
    with np.errstate(all="ignore"):
        r = _predict_log_or_raw(problem.law, nat, problem.xs, problem.log_target, np) - problem.target
    w = np.ones_like(r) if weights is None else np.asarray(weights, dtype=float)
    return float(np.sum(w * _rho(r, problem.loss, problem.delta, np)))
