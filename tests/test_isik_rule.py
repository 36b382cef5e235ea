"""Isik et al.'s rule (fits.isik): the BLEU log-law holds on aligned data, exact or noisy, even
on three checkpoints; BLEU that fluctuates or falls while cross-entropy improves is misaligned;
and the report writes the verdict as its own column."""
import ml_collections
import numpy as np
import pandas as pd
import pytest

import fits
from fits import isik
from scaling import report

D_P = np.geomspace(25e3, 3.2e6, 8)
GROUP = ("size", "mixture", "pair", "D_f")


def log_law(d_p, A=5.0, alpha=0.3, beta=1.2):
  return np.log(A * d_p ** alpha) ** beta


def improving_ce(d_p):
  return 1.5 + 30.0 * d_p ** -0.3


def verdict(d_p, bleu, ce, holdout=None):
  bleu_fit = fits.fit("log_law", d_p, bleu, holdout=holdout)
  return isik.verdict(bleu_fit, d_p, bleu, d_p, ce), bleu_fit


def test_exact_log_law_on_three_points_holds_and_is_not_flagged():
  d_p = D_P[[0, 3, 6]]
  result, bleu_fit = verdict(d_p, log_law(d_p), improving_ce(d_p))
  assert result == isik.HOLDS
  assert not any("misaligned" in note for note in bleu_fit.diagnostics)


def test_exact_log_law_fitted_on_the_smallest_four_holds():
  result, bleu_fit = verdict(D_P, log_law(D_P), improving_ce(D_P), holdout="smallest:4")
  assert result == isik.HOLDS and bleu_fit.diagnostics == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_aligned_increasing_bleu_holds(seed):
  noise = 1 + 0.02 * np.random.default_rng(seed).standard_normal(len(D_P))
  ce = improving_ce(D_P) * (1 + 0.005 * np.random.default_rng(seed + 10).standard_normal(len(D_P)))
  result, _ = verdict(D_P, log_law(D_P, A=1.0, beta=2.0) * noise, ce, holdout="smallest:4")
  assert result == isik.HOLDS


def test_non_monotone_bleu_with_improving_ce_is_misaligned():
  bleu = np.array([10.0, 14.0, 12.0, 16.0, 11.0, 15.0, 9.0, 13.0])
  result, bleu_fit = verdict(D_P, bleu, improving_ce(D_P), holdout="smallest:4")
  assert result == isik.MISALIGNED
  assert any("misaligned" in note for note in bleu_fit.diagnostics)


def test_bleu_falling_beyond_the_fitted_points_is_misaligned():
  # the four fitted points follow the log-law exactly; BLEU then falls on the held-out ones
  bleu = np.concatenate([log_law(D_P[:4]), log_law(D_P[3:4]) * np.array([0.85, 0.8, 0.75, 0.7])])
  result, _ = verdict(D_P, bleu, improving_ce(D_P), holdout="smallest:4")
  assert result == isik.MISALIGNED


def test_falling_bleu_with_flat_ce_fails_but_is_not_misaligned():
  result, _ = verdict(D_P, np.linspace(15.0, 9.0, len(D_P)), np.full(len(D_P), 2.7),
                      holdout="smallest:4")
  assert result == isik.FAILS


def test_fewer_than_three_checkpoints_are_too_few_points():
  d_p = D_P[:2]
  not_fitted = fits.FitResult(
      law="log_law", formula="", param_names=("A", "alpha", "beta"), params={}, ci={}, se={},
      n_points=2, n_fit=0, train_error=np.nan, heldout_error=np.nan, objective=np.nan, loss="",
      delta=np.nan, status="failed", diagnostics=[])
  assert isik.verdict(not_fitted, d_p, log_law(d_p), d_p, improving_ce(d_p)) == isik.TOO_FEW
  # repeated runs of one checkpoint are one checkpoint
  d_p = np.repeat(D_P[:2], 2)
  assert isik.verdict(not_fitted, d_p, log_law(d_p), d_p, improving_ce(d_p)) == isik.TOO_FEW


def test_ce_improves_needs_a_fall_beyond_one_percent():
  assert isik.ce_improves(D_P, improving_ce(D_P))
  assert not isik.ce_improves(D_P, np.full(len(D_P), 2.7) * (1 + 1e-3 * np.sin(np.arange(8))))
  assert not isik.ce_improves(D_P[:1], improving_ce(D_P[:1]))


# ------------------------------------------------------------------------------------
# The report's isik_rule column
# ------------------------------------------------------------------------------------

def isik_config():
  curve = dict(inputs=("D_p",), group_by=GROUP, holdout="smallest:4", where="",
               bootstrap_groups="")
  return ml_collections.ConfigDict(dict(seed=0, report=dict(plots=()), fits=dict(
      bootstrap=0, curves=dict(bleu=dict(law="log_law", target="bleu", delta=0.1, **curve),
                               ce=dict(law="power_law", target="ce", delta=1e-3, **curve)))))


def curve_rows(mixture, d_p, bleu, ce):
  return pd.DataFrame(dict(D_p=d_p, bleu=bleu, ce=ce)).assign(
      size="tiny", mixture=mixture, pair="xa-ya", D_f=15000, kind="translation", status="ok")


def isik_frame():
  """Four curves, one per verdict."""
  three = D_P[[0, 3, 6]]
  return pd.concat([
      curve_rows("aligned", D_P, log_law(D_P), improving_ce(D_P)),
      curve_rows("fluctuating", D_P, [10.0, 14.0, 12.0, 16.0, 11.0, 15.0, 9.0, 13.0],
                 improving_ce(D_P)),
      curve_rows("unrelated", D_P, np.linspace(15.0, 9.0, len(D_P)), np.full(len(D_P), 2.7)),
      curve_rows("three", three, log_law(three), improving_ce(three)),
      curve_rows("two", D_P[:2], log_law(D_P[:2]), improving_ce(D_P[:2])),
  ], ignore_index=True)


def test_report_writes_isik_rule_column(tmp_path):
  report.write(isik_config(), tmp_path, isik_frame())
  table = pd.read_csv(tmp_path / "fits.csv", keep_default_na=False)
  assert list(table.columns).index("isik_rule") == list(table.columns).index("status") + 1
  verdicts = {(row.curve, row.mixture): row.isik_rule for row in table.itertuples()}
  assert verdicts == {
      ("bleu", "aligned"): "holds", ("bleu", "fluctuating"): "misaligned",
      ("bleu", "unrelated"): "fails", ("bleu", "three"): "holds",
      ("bleu", "two"): "too few points",
      **{("ce", m): "" for m in ("aligned", "fluctuating", "unrelated", "three", "two")}}
  assert "isik_rule" in (tmp_path / "fits.md").read_text()
  assert r"isik\_rule" in (tmp_path / "fits.tex").read_text()


def test_report_has_no_isik_rule_column_without_a_log_law(tmp_path):
  cfg = isik_config()
  del cfg.fits.curves["bleu"]
  report.write(cfg, tmp_path, isik_frame())
  assert "isik_rule" not in pd.read_csv(tmp_path / "fits.csv").columns
