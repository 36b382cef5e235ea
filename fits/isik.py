"""Isik et al. (2024)'s rule: if BLEU's log-law does not fit, the pretraining data is misaligned.

When pretraining data is aligned with the downstream task, BLEU after finetuning follows the
log-law (log(A D_p^alpha))^beta in the pretraining size D_p and downstream cross-entropy follows
E + A / D_p^alpha.  When it is misaligned, cross-entropy can keep improving while BLEU
fluctuates or falls, and the log-law fit fails.

    verdict(bleu_fit, d_p, bleu, ce_d_p, ce)   # one of VERDICTS
    log_law_failures(bleu_fit, d_p, bleu)      # why the log-law does not hold ([] = it holds)

The log-law holds on a curve when all of these do (checked on every checkpoint of the curve,
held-out ones included, so a BLEU that falls beyond the fitted points counts):
  1. the fit predicts finite values at its points.  It need not have converged: a log-law fit
     left unconverged is one still descending towards its limit alpha -> 0, beta -> inf, where
     (log A + alpha log D_p)^beta becomes a power law of D_p; on noisy but increasing BLEU that
     limit fits well, and the error (2) and the rise (3) judge it, not the iteration budget;
  2. its in-sample RMS relative error is at most FIT_TOLERANCE (5 %): BLEU has a few % of noise;
  3. the fitted law rises by at least MIN_RISE (5 %) from the smallest to the largest D_p: a law
     driven flat (alpha -> 0) or falling (beta < 0) is a degenerate fit, not BLEU growing with D_p;
  4. BLEU never falls more than DROP_TOLERANCE (10 %) below its best at a smaller D_p: two
     checkpoints with 3 % noise each differ by 4 % (one sigma), so a smaller drop is noise.
The held-out error is not a criterion: three or four fitted points extrapolate their noise, which
says as much about the noise as about the alignment.  Exact log-law data passes all four, also on
three points, where the fit is an interpolation (an exact fit, not a failed one).
Cross-entropy improves when its least-squares line against log D_p falls by at least CE_TOLERANCE
(1 %) of its mean across the curve's D_p range.
"""
from __future__ import annotations

import numpy as np

HOLDS, MISALIGNED, FAILS, TOO_FEW = "holds", "misaligned", "fails", "too few points"
VERDICTS = (HOLDS, MISALIGNED, FAILS, TOO_FEW)
MIN_CHECKPOINTS = 3
FIT_TOLERANCE = 0.05
MIN_RISE = 0.05
DROP_TOLERANCE = 0.10
CE_TOLERANCE = 0.01


def verdict(bleu_fit, d_p, bleu, ce_d_p, ce) -> str:
    """Isik's rule for one curve: 'holds' (the BLEU log-law holds over >= 3 checkpoints),
    'misaligned' (it does not, while cross-entropy improves with D_p), 'fails' (it does not, and
    cross-entropy does not improve either: the data helps neither) or 'too few points'."""
    d_p, bleu = _by_checkpoint(d_p, bleu)
    if len(d_p) < MIN_CHECKPOINTS:
        return TOO_FEW
    if not log_law_failures(bleu_fit, d_p, bleu):
        return HOLDS
    return MISALIGNED if ce_improves(ce_d_p, ce) else FAILS


def log_law_failures(bleu_fit, d_p, bleu) -> list[str]:
    """Why the BLEU log-law does not hold on this curve (module docstring); [] if it holds."""
    d_p, bleu = _by_checkpoint(d_p, bleu)
    reasons = []
    if not np.isfinite(bleu_fit.train_error):
        reasons.append("no fit: the law is undefined at the fitted points or was not fitted")
    elif not bleu_fit.train_error <= FIT_TOLERANCE:
        reasons.append(f"in-sample error {bleu_fit.train_error:.3g} above {FIT_TOLERANCE:g}")
    elif len(d_p):
        reasons += _law_rise(bleu_fit, d_p)
    return reasons + _bleu_falls(bleu)


def ce_improves(d_p, ce) -> bool:
    """Cross-entropy's trend against log D_p falls by at least CE_TOLERANCE of its mean."""
    d_p, ce = _by_checkpoint(d_p, ce)
    if len(d_p) < 2:
        return False
    log_d = np.log(d_p)
    slope = np.polyfit(log_d, ce, 1)[0]
    return bool(slope * np.ptp(log_d) <= -CE_TOLERANCE * abs(np.mean(ce)))


def _law_rise(bleu_fit, d_p) -> list[str]:
    with np.errstate(all="ignore"):
        ends = bleu_fit.predict(np.array([d_p[0], d_p[-1]]))
    if not np.isfinite(ends).all() or ends[0] <= 0:
        return ["the law is undefined at the curve's smallest D_p"]
    rise = ends[1] / ends[0] - 1.0
    if rise < MIN_RISE:
        return [f"the fitted law rises {100 * rise:.3g} % over the D_p range (flat or falling)"]
    return []


def _bleu_falls(bleu) -> list[str]:
    best_before = np.maximum.accumulate(bleu)
    falls = int((bleu < (1.0 - DROP_TOLERANCE) * best_before).sum())
    if not falls:
        return []
    return [f"BLEU falls more than {100 * DROP_TOLERANCE:g} % below its best at a smaller D_p "
            f"at {falls} of {len(bleu)} checkpoints"]


def _by_checkpoint(d_p, values) -> tuple[np.ndarray, np.ndarray]:
    """Finite values averaged per distinct D_p (repeated runs of one checkpoint), sorted by D_p."""
    d_p, values = np.asarray(d_p, dtype=float), np.asarray(values, dtype=float)
    keep = np.isfinite(d_p) & np.isfinite(values) & (d_p > 0)
    unique, index = np.unique(d_p[keep], return_inverse=True)
    means = np.bincount(index, weights=values[keep], minlength=len(unique))
    return unique, means / np.maximum(np.bincount(index, minlength=len(unique)), 1)
