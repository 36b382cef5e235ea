"""Scaling laws as data: parameter names, a LaTeX formula, a default start grid, and predict().

Every law is a `Law`.  Its `model(p, xs, xp)` takes the natural parameters `p` (a tuple, in the
order of `param_names`), the inputs `xs` (a tuple of arrays, in the order of `input_names`) and an
array namespace `xp` (numpy or jax.numpy), so one definition serves prediction, the vectorised JAX
fitter and the scipy reference.  Parameters marked positive are fitted as `exp(raw)`: positivity
comes from the parameterisation, never from clipping.  A law may also declare bounds (`bounds`,
natural scale, open); a fit may add or replace them (`fit(..., bounds=...)`; see `fits.bounds`).

Laws that need the data to know their parameters (Fernandes et al.'s joint law has one `beta` per
language weight) are built by a factory: `get("fernandes_joint", weights=[0.1, 0.5, 1.0])`.

Helpers implied by the fitted laws: `chinchilla_compute_optimal`, `ghorbani_optimal_split`,
`fernandes_effective_fraction`, and `muennighoff_effective` (effective data/parameters under
repetition).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fits import bounds as bounds_lib

__all__ = [
    "Law", "get", "names", "register",
    "chinchilla_compute_optimal", "ghorbani_optimal_split", "fernandes_effective_fraction",
    "muennighoff_effective", "MUENNIGHOFF_BASE",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Law:
    """A parametric law y = model(params, inputs).

    Attributes:
      name: registry name.
      param_names: names of the parameters, in order.
      input_names: names of the inputs, in order (a DataFrame's columns map onto these).
      latex: the formula, for tables.
      model: `model(p, xs, xp) -> y`; `p` a tuple of natural parameter values.
      positive: per parameter, whether it is fitted as exp(raw) (so it stays > 0).
      grid: per parameter, the default start values (natural scale); the start grid is their product.
      log_model: optional `log_model(p, xs, xp) -> log y`, numerically stabler than log(model).
      log_target: fit residuals log(pred) - log(y) (the literature's choice for losses) if True,
        else pred - y.
      default_loss, default_delta: the objective the literature uses for this law.
      monotone: +1 / -1 if the law is monotone increasing / decreasing in its first input, else 0.
      bounds: per parameter, default (lower, upper) bounds, None for an open side.
    """

    name: str
    param_names: tuple[str, ...]
    input_names: tuple[str, ...]
    latex: str
    model: Callable[..., Any]
    positive: tuple[bool, ...]
    grid: Mapping[str, Sequence[float]]
    log_model: Callable[..., Any] | None = None
    log_target: bool = True
    default_loss: str = "huber"
    default_delta: float = 1e-3
    monotone: int = 0
    bounds: Mapping[str, tuple] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.positive) != len(self.param_names):
            raise ValueError(f"law {self.name!r}: positive has {len(self.positive)} entries, "
                             f"param_names {len(self.param_names)}")
        missing = set(self.param_names) - set(self.grid)
        if missing:
            raise ValueError(f"law {self.name!r}: grid lacks parameters {sorted(missing)}")
        self.box()  # its own bounds must be valid

    def box(self, bounds: Mapping | None = None) -> bounds_lib.Box:
        """The bounds of a fit: positivity, the law's `bounds`, then `bounds` (see fits.bounds)."""
        return bounds_lib.resolve(self.param_names, self.positive, self.bounds, bounds)

    @property
    def n_inputs(self) -> int:
        return len(self.input_names)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def param_vector(self, params) -> np.ndarray:
        """Natural parameters as a float array in `param_names` order (from a dict or sequence)."""
        if isinstance(params, Mapping):
            unknown = set(params) - set(self.param_names)
            if unknown:
                raise ValueError(f"law {self.name!r}: unknown parameters {sorted(unknown)}; "
                                 f"expected {list(self.param_names)}")
            missing = [n for n in self.param_names if n not in params]
            if missing:
                raise ValueError(f"law {self.name!r}: params lacks {missing}")
            return np.array([float(params[n]) for n in self.param_names])
        vec = np.asarray(params, dtype=float).reshape(-1)
        if vec.size != self.n_params:
            raise ValueError(f"law {self.name!r}: params has {vec.size} values, "
                             f"expected {self.n_params} ({list(self.param_names)})")
        return vec

    def inputs(self, x) -> tuple[np.ndarray, ...]:
        """Normalise x (1-D array, dict of named arrays, DataFrame or 2-D array) to a tuple of columns."""
        return as_inputs(self, x)

    def predict(self, params, x) -> np.ndarray:
        """The law's value at x (numpy, float64)."""
        p = tuple(self.param_vector(params))
        with np.errstate(all="ignore"):
            return np.asarray(self.model(p, self.inputs(x), np), dtype=float)

    def start_grid(self) -> np.ndarray:
        """The product of the per-parameter default start values, shape (n_starts, n_params)."""
        axes = [list(self.grid[n]) for n in self.param_names]
        return np.array(list(itertools.product(*axes)), dtype=float)

    def to_raw(self, natural: np.ndarray) -> np.ndarray:
        """Raw parameters under the law's own bounds (NaN outside them)."""
        return self._default_box.to_raw(natural)

    def to_natural(self, raw, xp=np):
        return self._default_box.to_natural(raw, xp)

    @functools.cached_property
    def _default_box(self) -> bounds_lib.Box:
        return self.box()


def as_inputs(law: Law, x) -> tuple[np.ndarray, ...]:
    """x as a tuple of float64 columns in `law.input_names` order; ValueError names what is wrong."""
    if isinstance(x, Mapping) or hasattr(x, "columns"):
        missing = [n for n in law.input_names if n not in x]
        if missing:
            have = list(x.columns) if hasattr(x, "columns") else sorted(x)
            raise ValueError(f"law {law.name!r}: x lacks inputs {missing} (has {have})")
        cols = [np.asarray(x[n], dtype=float).reshape(-1) for n in law.input_names]
    elif (isinstance(x, tuple) and len(x) == law.n_inputs
          and all(np.ndim(c) == 1 for c in x)):  # already a tuple of columns
        cols = [np.asarray(c, dtype=float) for c in x]
    else:
        arr = np.asarray(x, dtype=float)
        if arr.ndim == 1 and law.n_inputs == 1:
            cols = [arr]
        elif arr.ndim == 2 and arr.shape[1] == law.n_inputs:
            cols = [arr[:, i] for i in range(law.n_inputs)]
        elif arr.ndim == 0 and law.n_inputs == 1:
            cols = [arr.reshape(1)]
        else:
            raise ValueError(f"law {law.name!r}: x has shape {arr.shape}; expected "
                             f"{'(n,)' if law.n_inputs == 1 else f'(n, {law.n_inputs})'} or a dict "
                             f"with {list(law.input_names)}")
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise ValueError(f"law {law.name!r}: inputs {list(law.input_names)} have mismatched "
                         f"lengths {[len(c) for c in cols]}")
    return tuple(cols)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Law]] = {}


def register(name: str, factory: Callable[..., Law]) -> None:
    _REGISTRY[name] = factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name, **kwargs) -> Law:
    """The law registered as `name` (a Law passes through).  Factories take keyword arguments."""
    if isinstance(name, Law):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown law {name!r}; known laws: {names()}")
    return _REGISTRY[name](**kwargs)


def _static(law: Law) -> Callable[..., Law]:
    def factory(**kwargs):
        if kwargs:
            raise ValueError(f"law {law.name!r} takes no options, got {sorted(kwargs)}")
        return law
    return factory


def _log_sum_exp(xp, *terms):
    """log(sum(exp(terms))), shifted by the largest term so nothing overflows.  Written out rather
    than nested logaddexp: XLA runs this and its Jacobian about twice as fast.  The shift carries
    no gradient (its derivative cancels exactly), so under JAX it is cut from the trace."""
    shift = functools.reduce(xp.maximum, terms)
    if xp is not np:
        import jax

        shift = jax.lax.stop_gradient(shift)
    shift = xp.where(xp.isfinite(shift), shift, 0.0)
    return shift + xp.log(sum(xp.exp(term - shift) for term in terms))


# ----------------------------------------------------------------------------------------------
# Univariate laws
# ----------------------------------------------------------------------------------------------

def _power_law(p, xs, xp):
    E, A, alpha = p
    return E + A * xs[0] ** (-alpha)


def _power_law_log(p, xs, xp):
    E, A, alpha = p
    return _log_sum_exp(xp, xp.log(E), xp.log(A) - alpha * xp.log(xs[0]))


POWER_LAW = Law(
    name="power_law", param_names=("E", "A", "alpha"), input_names=("x",),
    latex=r"$E + A\,x^{-\alpha}$",
    model=_power_law, log_model=_power_law_log, positive=(True, True, True),
    grid={"E": (0.5, 1.0, 2.0), "A": (1.0, 10.0, 100.0, 1000.0), "alpha": (0.1, 0.3, 0.6, 1.0)},
    monotone=-1,
)


def _m4_excess(log_f, b, alpha, xp, n_newton=48):
    """The w in (0, b) with  w = f * (b - w)**alpha  (Alabdulmohsin et al.'s M4, w = L - L_inf,
    b = L_0 - L_inf).  Newton's method on u = logit(w / b), where
    h(u) = log w - alpha log(b - w) - log f  rises with slope sigmoid(-u) + alpha sigmoid(u), within
    [min(1, alpha), max(1, alpha)], and has one curvature sign: it converges from the start below,
    the root of h's asymptote, and a fixed count of steps keeps it differentiable under JAX."""
    q = log_f - (1.0 - alpha) * xp.log(b)  # h(u) = log sigmoid(u) - alpha log sigmoid(-u) - q
    u0 = xp.where(q < 0, q, q / xp.maximum(alpha, 1e-3))

    def newton(u):
        log_sig, log_sig_neg = -xp.logaddexp(0.0, -u), -xp.logaddexp(0.0, u)
        h = log_sig - alpha * log_sig_neg - q
        slope = xp.exp(log_sig_neg) + alpha * xp.exp(log_sig)
        return u - xp.clip(h / slope, -30.0, 30.0)

    if xp is np:
        u = u0
        for _ in range(n_newton):
            u = newton(u)
    else:
        import jax

        # Solve without derivatives, then one Newton step from the root carries them exactly
        # (the implicit function theorem: du = -dh / h'), at the cost of one step, not n_newton.
        u = jax.lax.stop_gradient(jax.lax.fori_loop(0, n_newton, lambda _, v: newton(v), u0))
        u = newton(u)
    return b * xp.exp(-xp.logaddexp(0.0, -u))


def _m4(p, xs, xp):
    L_inf, L_0, alpha, beta, c = p
    log_f = xp.log(beta) + c * xp.log(xs[0])
    return L_inf + _m4_excess(log_f, L_0 - L_inf, alpha, xp)  # NaN where L_0 <= L_inf


M4 = Law(
    name="m4", param_names=("L_inf", "L_0", "alpha", "beta", "c"), input_names=("x",),
    latex=r"$\frac{L_x - L_\infty}{(L_0 - L_x)^{\alpha}} = \beta\,x^{c}$",
    model=_m4, positive=(True, True, True, True, False),
    # Losses and error rates alike: starts with L_inf above or L_0 below the data are not finite
    # and drop out at once.
    grid={"L_inf": (0.01, 0.1, 0.3, 1.0), "L_0": (1.0, 2.0, 5.0, 10.0, 30.0),
          "alpha": (0.1, 0.5, 1.0, 2.0), "beta": (1.0, 1e2, 1e4, 1e6),
          "c": (-0.1, -0.3, -0.6, -1.0)},
    default_loss="lsq", monotone=-1,
)


def _log_law(p, xs, xp):
    A, alpha, beta = p
    return (xp.log(A) + alpha * xp.log(xs[0])) ** beta


def _log_law_log(p, xs, xp):
    A, alpha, beta = p
    return beta * xp.log(xp.log(A) + alpha * xp.log(xs[0]))


LOG_LAW = Law(
    name="log_law", param_names=("A", "alpha", "beta"), input_names=("x",),
    latex=r"$\left(\log(A\,x^{\alpha})\right)^{\beta}$",
    model=_log_law, log_model=_log_law_log, positive=(True, True, False),
    grid={"A": (0.01, 1.0, 100.0), "alpha": (0.05, 0.1, 0.3, 1.0), "beta": (0.5, 1.0, 2.0, 4.0)},
    default_delta=0.1, monotone=+1,
)


def _exp_link(p, xs, xp):
    eps, k, gamma = p
    return eps - k * xp.exp(-gamma * xs[0])


EXP_LINK = Law(
    name="exp_link", param_names=("eps", "k", "gamma"), input_names=("L",),
    latex=r"$\epsilon - k\,e^{-\gamma L}$",
    model=_exp_link, positive=(False, True, True),
    grid={"eps": (0.5, 0.9), "k": (0.5, 2.0, 5.0), "gamma": (0.2, 0.7, 1.5)},
    log_target=False, default_loss="lsq",
)


def _sigmoid_link(p, xs, xp):
    a, k, L0, b = p
    return a / (1.0 + xp.exp(-k * (xs[0] - L0))) + b


SIGMOID_LINK = Law(
    name="sigmoid_link", param_names=("a", "k", "L0", "b"), input_names=("L",),
    latex=r"$\frac{a}{1 + e^{-k (L - L_0)}} + b$",
    model=_sigmoid_link, positive=(False, True, False, False),
    grid={"a": (-1.0, 1.0), "k": (1.0, 5.0), "L0": (2.0, 3.0, 4.0), "b": (0.0, 0.5)},
    log_target=False, default_loss="lsq",
)


def _fernandes_fraction(p, xs, xp):
    c1, c2, c3 = p
    w = xs[0]
    return w + c1 * w ** c2 * (1.0 - w) ** c3


FERNANDES_FRACTION = Law(
    name="fernandes_fraction", param_names=("c1", "c2", "c3"), input_names=("p",),
    latex=r"$p + c_1\,p^{c_2}(1-p)^{c_3}$",
    model=_fernandes_fraction, positive=(False, True, True),
    grid={"c1": (-1.0, 0.0, 1.0), "c2": (0.5, 1.0, 2.0), "c3": (0.5, 1.0, 2.0)},
    log_target=False, default_loss="lsq",
)


# ----------------------------------------------------------------------------------------------
# Bivariate laws
# ----------------------------------------------------------------------------------------------

def _chinchilla(p, xs, xp):
    E, A, B, alpha, beta = p
    N, D = xs
    return E + A * N ** (-alpha) + B * D ** (-beta)


def _chinchilla_log(p, xs, xp):
    # Hoffmann et al.'s LSE(a - alpha log N, b - beta log D, e)
    E, A, B, alpha, beta = p
    N, D = xs
    return _log_sum_exp(xp, xp.log(A) - alpha * xp.log(N), xp.log(B) - beta * xp.log(D),
                        xp.log(E))


CHINCHILLA = Law(
    name="chinchilla", param_names=("E", "A", "B", "alpha", "beta"), input_names=("N", "D"),
    latex=r"$E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}}$",
    model=_chinchilla, log_model=_chinchilla_log, positive=(True, True, True, False, False),
    # Hoffmann et al.'s 4,500-point grid: e, a, b on the log scale, alpha and beta as they are.
    grid={"E": tuple(math.exp(e) for e in (-1.0, -0.5, 0.0, 0.5, 1.0)),
          "A": tuple(math.exp(a) for a in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)),
          "B": tuple(math.exp(b) for b in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)),
          "alpha": (0.0, 0.5, 1.0, 1.5, 2.0), "beta": (0.0, 0.5, 1.0, 1.5, 2.0)},
    monotone=-1,
)


def chinchilla_compute_optimal(params, C) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal N*(C), D*(C) for C = 6 N D (Hoffmann et al. eq. 4)."""
    E, A, B, alpha, beta = CHINCHILLA.param_vector(params)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    C6 = np.asarray(C, dtype=float) / 6.0
    return G * C6 ** a, C6 ** b / G


def _ghorbani(p, xs, xp):
    beta, p_e, p_d, L_inf = p
    N_e, N_d = xs
    return beta * N_e ** (-p_e) * N_d ** (-p_d) + L_inf


def _ghorbani_log(p, xs, xp):
    beta, p_e, p_d, L_inf = p
    N_e, N_d = xs
    return _log_sum_exp(xp, xp.log(beta) - p_e * xp.log(N_e) - p_d * xp.log(N_d), xp.log(L_inf))


GHORBANI = Law(
    name="ghorbani", param_names=("beta", "p_e", "p_d", "L_inf"), input_names=("N_e", "N_d"),
    latex=r"$\beta\,N_e^{-p_e} N_d^{-p_d} + L_\infty$",
    model=_ghorbani, log_model=_ghorbani_log, positive=(True, True, True, True),
    grid={"beta": (0.1, 1.0, 10.0, 100.0), "p_e": (0.1, 0.3, 0.6), "p_d": (0.1, 0.3, 0.6),
          "L_inf": (0.5, 1.0, 2.0)},
    monotone=-1,
)


def ghorbani_optimal_split(params) -> float:
    """Encoder share N_e / (N_e + N_d) that minimises the loss at fixed total: p_e / (p_e + p_d)."""
    _, p_e, p_d, _ = GHORBANI.param_vector(params)
    return float(p_e / (p_e + p_d))


def _gadre(p, xs, xp):
    a, b, c, E = p
    N, M = xs
    return a * N ** b + c * 6.0 ** (b / 2.0) * (M * N) ** b + E


GADRE_OVERTRAIN = Law(
    name="gadre_overtrain", param_names=("a", "b", "c", "E"), input_names=("N", "M"),
    latex=r"$a N^{b} + c\,6^{b/2} (M N)^{b} + E$",
    model=_gadre, positive=(True, False, True, True),
    grid={"a": (10.0, 100.0, 1000.0), "b": (-0.5, -0.3, -0.1), "c": (10.0, 100.0, 1000.0),
          "E": (1.0, 2.0, 3.0)},
    log_target=False, default_loss="lsq", monotone=-1,
)


# Muennighoff et al.'s base (Chinchilla-form) parameters, published and held fixed in their fit.
MUENNIGHOFF_BASE = {"E": math.exp(0.6254804), "A": math.exp(6.255414), "B": math.exp(7.3049974),
                    "alpha": 0.3526596, "beta": 0.3526596}


def muennighoff_effective(N, D, U, *, A, B, alpha, beta, R_D_star, R_N_star, xp=np):
    """Effective parameters and tokens under repetition (Muennighoff et al. 2023, eqs. 5-6).

    U_N = min(N, N_opt(U)) with N_opt(U) the compute-optimal model size for U tokens under the base
    law; R_D = max(D / U - 1, 0), R_N = max(N / U_N - 1, 0);
    D_eff = U + U R_D* (1 - exp(-R_D / R_D*)), and likewise N_eff from U_N, R_N, R_N*.
    """
    # From N* = G (C/6)^a and D* = (C/6)^b / G: C/6 = (G D*)^(1/b), so N*(D*) = G (G D*)^(a/b).
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    a_exp, b_exp = beta / (alpha + beta), alpha / (alpha + beta)
    N_opt = G * (G * U) ** (a_exp / b_exp)
    U_N = xp.minimum(N, N_opt)
    R_D = xp.maximum(D / U - 1.0, 0.0)
    R_N = xp.maximum(N / U_N - 1.0, 0.0)
    D_eff = U + U * R_D_star * (1.0 - xp.exp(-R_D / R_D_star))
    N_eff = U_N + U_N * R_N_star * (1.0 - xp.exp(-R_N / R_N_star))
    return N_eff, D_eff


def _muennighoff_log(p, xs, xp):
    E, A, B, alpha, beta, R_D_star, R_N_star = p
    N, D, U = xs
    N_eff, D_eff = muennighoff_effective(N, D, U, A=A, B=B, alpha=alpha, beta=beta,
                                         R_D_star=R_D_star, R_N_star=R_N_star, xp=xp)
    return _log_sum_exp(xp, xp.log(A) - alpha * xp.log(N_eff), xp.log(B) - beta * xp.log(D_eff),
                        xp.log(E))


def _muennighoff(p, xs, xp):
    return xp.exp(_muennighoff_log(p, xs, xp))


DATA_CONSTRAINED = Law(
    name="data_constrained",
    param_names=("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star"),
    input_names=("N", "D", "U"),
    latex=(r"$E + \frac{A}{N_{\mathrm{eff}}^{\alpha}} + \frac{B}{D_{\mathrm{eff}}^{\beta}},\ "
           r"D_{\mathrm{eff}} = U_D + U_D R_D^{*}(1 - e^{-R_D/R_D^{*}})$"),
    model=_muennighoff, log_model=_muennighoff_log,
    positive=(True, True, True, True, True, True, True),
    grid={"E": (MUENNIGHOFF_BASE["E"],), "A": (MUENNIGHOFF_BASE["A"],),
          "B": (MUENNIGHOFF_BASE["B"],), "alpha": (MUENNIGHOFF_BASE["alpha"],),
          "beta": (MUENNIGHOFF_BASE["beta"],),
          "R_D_star": (1.0, 5.0, 10.0, 20.0, 50.0), "R_N_star": (1.0, 3.0, 5.0, 10.0, 20.0)},
    monotone=0,
)


# ----------------------------------------------------------------------------------------------
# Fernandes et al.'s joint multilingual law (one beta per language weight)
# ----------------------------------------------------------------------------------------------

def _weight_label(w: float) -> str:
    return f"beta[p={float(w):g}]"


def fernandes_joint(weights: Sequence[float] = (0.5, 1.0)) -> Law:
    """L(N; p) = beta_p N**-alpha + L_inf with alpha, L_inf shared; inputs N and the weight p.

    `weights` are the distinct language weights in the data; a point whose p is not among them is
    predicted as NaN.
    """
    ws = tuple(sorted({float(w) for w in np.asarray(weights, dtype=float).reshape(-1)}))
    if not ws:
        raise ValueError("fernandes_joint: weights is empty")
    if any(not (0.0 < w <= 1.0) for w in ws):
        raise ValueError(f"fernandes_joint: weights must lie in (0, 1], got {list(ws)}")
    ws_arr = np.array(ws)

    def beta_of(p, w, xp):
        betas = xp.stack(list(p[2:]))
        onehot = xp.asarray(w)[:, None] == xp.asarray(ws_arr)[None, :]
        picked = xp.sum(xp.where(onehot, betas[None, :], 0.0), axis=1)
        return xp.where(xp.any(onehot, axis=1), picked, xp.nan)

    def log_model(p, xs, xp):
        alpha, L_inf = p[0], p[1]
        N, w = xs
        return _log_sum_exp(xp, xp.log(beta_of(p, w, xp)) - alpha * xp.log(N), xp.log(L_inf))

    def model(p, xs, xp):
        return xp.exp(log_model(p, xs, xp))

    betas = tuple(_weight_label(w) for w in ws)
    return Law(
        name="fernandes_joint", param_names=("alpha", "L_inf") + betas, input_names=("N", "p"),
        latex=r"$\beta_p\,N^{-\alpha} + L_\infty$",
        model=model, log_model=log_model, positive=(True,) * (2 + len(ws)),
        grid={"alpha": (0.1, 0.3, 0.6), "L_inf": (0.5, 1.0, 2.0),
              **{b: (1.0, 10.0, 100.0) for b in betas[:1]}, **{b: (10.0,) for b in betas[1:]}},
        monotone=-1,
    )


def fernandes_effective_fraction(params: Mapping[str, float]) -> dict[float, float]:
    """f(p) = (beta_1 / beta_p)**(1/alpha) for every weight p in a fitted joint law (needs p = 1)."""
    alpha = float(params["alpha"])
    betas = {float(k[len("beta[p="):-1]): float(v) for k, v in params.items()
             if k.startswith("beta[p=")}
    if 1.0 not in betas:
        raise ValueError(f"fernandes_effective_fraction: params lack beta[p=1] (have {sorted(betas)})")
    return {w: (betas[1.0] / b) ** (1.0 / alpha) for w, b in sorted(betas.items())}


for _law in (POWER_LAW, M4, LOG_LAW, EXP_LINK, SIGMOID_LINK, FERNANDES_FRACTION, CHINCHILLA, GHORBANI,
             GADRE_OVERTRAIN, DATA_CONSTRAINED):
    register(_law.name, _static(_law))
register("fernandes_joint", fernandes_joint)
