"""Parameter bounds as a smooth change of variables.

The optimisers move each parameter on a raw scale that covers the whole real line; the law sees
the natural value, which cannot leave its interval whatever the raw value:

    no bound        natural = raw
    lower only      natural = lower + exp(raw)       (a positive parameter: lower = 0)
    upper only      natural = upper - exp(raw)
    both            natural = lower + (upper - lower) * sigmoid(raw)

No value is ever clipped, so the objective stays smooth in the raw parameters and every start,
every Levenberg-Marquardt step and every bootstrap refit honours the bounds.  A fit whose optimum
lies on a bound ends with its raw value far out (the sigmoid saturated), the natural value on the
bound, and a diagnostic that says so.

Bounds are open: a start must lie strictly inside them.  `Law.box(bounds)` (`resolve` here)
merges a law's own bounds (positivity, then `Law.bounds`) with a fit's, and names what is wrong
with them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

# |raw| beyond which exp and sigmoid are exactly their limits in float64: a natural value on a
# bound maps to this raw value, not to an infinity.
RAW_LIMIT = 745.0
# A bootstrap refit starts at least this far (relative) inside a bound the full fit ended on: on
# the bound itself the sigmoid's derivative underflows and the refit could not move off it.
SEED_GAP = 1e-6
# A default start on or beyond a bound is moved this far (relative) inside it.
START_GAP = 0.01


@dataclasses.dataclass(frozen=True, eq=False)
class Box:
    """Open bounds per parameter, natural scale; -inf / inf where a side is unbounded."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray

    @property
    def two_sided(self) -> np.ndarray:
        return np.isfinite(self.lower) & np.isfinite(self.upper)

    def to_raw(self, natural) -> np.ndarray:
        """Raw values of natural ones (rows of `natural`); NaN outside the bounds."""
        return to_raw(np.asarray(natural, dtype=float), self.lower, self.upper)

    def to_natural(self, raw, xp=np):
        with np.errstate(over="ignore"):  # a raw value beyond exp's range maps to infinity
            return to_natural(raw, self.lower, self.upper, xp)

    def kind(self, i: int) -> str:
        """'none', 'one' (one side bounded: exp) or 'two' (both: sigmoid) for parameter i."""
        sides = int(np.isfinite(self.lower[i])) + int(np.isfinite(self.upper[i]))
        return ("none", "one", "two")[sides]

    def slope(self, raw) -> np.ndarray:
        """d natural / d raw per entry (the delta method's factor)."""
        raw = np.asarray(raw, dtype=float)
        has_lo, has_hi = np.isfinite(self.lower), np.isfinite(self.upper)
        with np.errstate(over="ignore", invalid="ignore"):
            s = 1.0 / (1.0 + np.exp(-np.where(has_lo & has_hi, raw, 0.0)))
            width = np.where(has_lo & has_hi, self.upper - self.lower, 0.0)
            one = np.where(has_lo, 1.0, -1.0) * np.exp(np.where(has_lo ^ has_hi, raw, 0.0))
        return np.where(has_lo & has_hi, width * s * (1 - s), np.where(has_lo | has_hi, one, 1.0))

    def inside(self, natural) -> np.ndarray:
        """Per entry: strictly inside its bounds."""
        natural = np.asarray(natural, dtype=float)
        return (natural > self.lower) & (natural < self.upper)

    def side_reached(self, natural) -> list[str | None]:
        """Per parameter, 'lower' or 'upper' where the value sits on that bound (within 1e-6 of its
        scale, as for a positive parameter driven to 0), else None."""
        out = []
        for value, lo, hi in zip(np.asarray(natural, dtype=float), self.lower, self.upper):
            tol = 1e-6 * _scale(lo, hi)
            out.append("lower" if value - lo <= tol else "upper" if hi - value <= tol else None)
        return out

    def move_inside(self, natural: np.ndarray) -> np.ndarray:
        """Rows of natural values with every entry on or outside a bound moved START_GAP of the
        bound's scale inside it (default starts: a grid knows nothing of a fit's bounds)."""
        natural = np.array(natural, dtype=float)
        for i in range(len(self.names)):
            lo, hi = self.lower[i], self.upper[i]
            gap = START_GAP * _scale(lo, hi)
            if np.isfinite(lo):
                natural[:, i] = np.where(natural[:, i] <= lo, lo + gap, natural[:, i])
            if np.isfinite(hi):
                natural[:, i] = np.where(natural[:, i] >= hi, hi - gap, natural[:, i])
        return natural

    def seed(self, raw: np.ndarray, free_idx) -> np.ndarray:
        """Raw free parameters moved SEED_GAP inside any bound they sit on."""
        raw = np.array(raw, dtype=float)
        for j, i in enumerate(free_idx):
            lo, hi = self.lower[i], self.upper[i]
            if np.isfinite(lo) and np.isfinite(hi):
                edge = math.log((1 - SEED_GAP) / SEED_GAP)
                raw[..., j] = np.clip(raw[..., j], -edge, edge)
            elif np.isfinite(lo) or np.isfinite(hi):
                floor = math.log(SEED_GAP * _scale(lo, hi))
                raw[..., j] = np.maximum(raw[..., j], floor)
        return raw

    def describe(self, i: int) -> str:
        """Parameter i's bounds as '(lower, upper)'."""
        return f"({self.lower[i]:g}, {self.upper[i]:g})"


def _scale(lo: float, hi: float) -> float:
    """The size a bound's closeness is measured against: the interval's width if finite, else the
    bound's magnitude, at least 1."""
    if np.isfinite(lo) and np.isfinite(hi):
        return float(hi - lo)
    bound = lo if np.isfinite(lo) else hi
    return max(1.0, abs(float(bound))) if np.isfinite(bound) else 1.0


def to_raw(natural: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    has_lo, has_hi = np.isfinite(lower), np.isfinite(upper)
    with np.errstate(divide="ignore", invalid="ignore"):
        above = np.log(natural - np.where(has_lo, lower, 0.0))
        below = np.log(np.where(has_hi, upper, 0.0) - natural)
        raw = np.where(has_lo & has_hi, above - below,
                       np.where(has_lo, above, np.where(has_hi, below, natural)))
    bounded = has_lo | has_hi
    return np.where(bounded & ~np.isnan(raw), np.clip(raw, -RAW_LIMIT, RAW_LIMIT), raw)


def to_natural(raw, lower, upper, xp=np):
    """Natural values of raw ones under numpy or jax.numpy.  Every branch is computed on a raw value
    that cannot overflow in it (the others see 0), so no inf or NaN reaches a derivative."""
    lower, upper = xp.asarray(lower), xp.asarray(upper)
    has_lo, has_hi = xp.isfinite(lower), xp.isfinite(upper)
    both, one = has_lo & has_hi, has_lo ^ has_hi
    lo, hi = xp.where(has_lo, lower, 0.0), xp.where(has_hi, upper, 0.0)
    gap = xp.exp(xp.where(one, raw, 0.0))
    # each side of the sigmoid measured from its own bound, with exp of a non-positive value only:
    # exact on the bound when saturated, and a value near a bound keeps its relative precision
    s = xp.where(both, raw, 0.0)
    below, above = xp.where(s < 0, s, 0.0), xp.where(s < 0, 0.0, -s)
    from_lo = lo + (hi - lo) * (xp.exp(below) / (1.0 + xp.exp(below)))
    from_hi = hi - (hi - lo) * (xp.exp(above) / (1.0 + xp.exp(above)))
    two = xp.where(s < 0, from_lo, from_hi)
    return xp.where(both, two, xp.where(has_lo, lo + gap, xp.where(has_hi, hi - gap, raw)))


def resolve(names, positive, defaults: Mapping, bounds: Mapping | None) -> Box:
    """The bounds of a fit: positivity, then the law's `defaults`, then `bounds` (a fit's own, which
    replace the law's for the parameters they name; (None, None) lifts a law's bound).  ValueError
    names an unknown parameter, a bound that is not a (lower, upper) pair of numbers or None, and a
    lower bound not below the upper one."""
    lower = np.where(np.array(positive, dtype=bool), 0.0, -np.inf)
    upper = np.full(len(names), np.inf)
    merged = {**dict(defaults or {}), **dict(bounds or {})}
    unknown = sorted(set(merged) - set(names))
    if unknown:
        raise ValueError(f"bounds name unknown parameters {unknown}; the law has {list(names)}")
    for name, pair in merged.items():
        i = names.index(name)
        lo, hi = _pair(name, pair)
        if lo is not None:
            lower[i] = max(lower[i], lo)  # a positive parameter keeps its lower bound 0
        if hi is not None:
            upper[i] = hi
        if not lower[i] < upper[i]:
            why = f" (the law keeps {name} > 0)" if positive[i] and upper[i] <= 0 else ""
            raise ValueError(f"bounds for {name!r}: the lower bound {lower[i]:g} must lie below "
                             f"the upper bound {upper[i]:g}{why}")
    return Box(names=tuple(names), lower=lower, upper=upper)


def _pair(name, pair) -> tuple[float | None, float | None]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"bounds for {name!r} must be a (lower, upper) pair, None for no bound; "
                         f"got {pair!r}")
    out = []
    for side, value in zip(("lower", "upper"), pair):
        if value is None:
            out.append(None)
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"bounds for {name!r}: the {side} bound must be a number or None, "
                             f"got {value!r}") from None
        if math.isnan(value):
            raise ValueError(f"bounds for {name!r}: the {side} bound is NaN")
        out.append(None if math.isinf(value) else value)
    return out[0], out[1]
