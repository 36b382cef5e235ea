"""scaling.report on synthetic results frames: the pre-run curve checks, multi-input
fits that recover the laws that generated the data, tables, and every plot kind.

No training: each frame is built from an exact law, so a fit must find its parameters.
"""
import math

import ml_collections
import numpy as np
import pandas as pd
import pytest

import fits
from scaling import report
from scaling.config import ConfigError

PRODUCED = {
    "key", "status", "kind", "size", "N", "N_e", "N_d", "N_nonembed", "mixture", "rates", "p",
    "pair", "objective", "D_p", "D_p_seen", "D_f", "ce", "bleu", "chrf", "loss",
    "bits_per_token", "flops", "schedule", "branch", "decode", "sacrebleu", "wall_s",
    "pretrain_key", "finetune_key", "config_hash", "error",
}
ISIK_GROUP = ("size", "mixture", "pair", "D_f")


def study_config(curves, plots=("curves",), bootstrap=0):
  return ml_collections.ConfigDict(dict(
      seed=0, fits=dict(bootstrap=bootstrap, curves=curves), report=dict(plots=plots)))


def isik_curves(**ce_changes):
  return {
      "bleu": dict(law="log_law", inputs=("D_p",), target="bleu", group_by=ISIK_GROUP,
                   holdout="smallest:4", delta=0.1, where="", bootstrap_groups=""),
      "ce": {**dict(law="power_law", inputs=("D_p",), target="ce", group_by=ISIK_GROUP,
                    holdout="smallest:4", delta=1e-3, where="", bootstrap_groups=""),
             **ce_changes},
  }


def rows(columns: dict, **constant) -> pd.DataFrame:
  frame = pd.DataFrame(columns)
  for name, value in {"status": "ok", **constant}.items():
    frame[name] = value
  return frame


def isik_frame() -> pd.DataFrame:
  """BLEU = (log(D_p^0.3))^2 and CE = 1.5 + 30 D_p^-0.3, two sizes, one diverged run."""
  d_p = np.array([25e3, 50e3, 100e3, 200e3, 400e3])
  curve = dict(D_p=d_p, bleu=np.log(d_p ** 0.3) ** 2.0, ce=1.5 + 30.0 * d_p ** -0.3,
               pretrain_key=["pa", "pa", "pb", "pb", "pc"])
  diverged = rows(dict(D_p=[800e3], bleu=[np.nan], ce=[np.nan]), status="diverged", size="tiny")
  frames = [rows(curve, size=size) for size in ("tiny", "small")] + [diverged]
  return pd.concat(frames, ignore_index=True).assign(
      mixture="aligned", pair="xa-ya", D_f=15000, kind="translation")


# ------------------------------------------------------------------------------------
# check_curves
# ------------------------------------------------------------------------------------

def test_check_curves_accepts_the_demo_curves():
  report.check_curves(study_config(isik_curves()), PRODUCED)


@pytest.mark.parametrize("ce_changes, plots, bootstrap, field, detail", [
    (dict(law="no_such_law"), ("curves",), 0, "fits.curves.ce.law", "unknown law"),
    (dict(law="ghorbani"), ("curves",), 0, "fits.curves.ce.inputs", "takes 2: N_e, N_d"),
    (dict(law="chinchilla", inputs=("N", "D_p", "D_f")), ("curves",), 0,
     "fits.curves.ce.inputs", "takes 2: N, D"),
    (dict(inputs=("D_q",)), ("curves",), 0, "fits.curves.ce.inputs", "'D_q', which no stage"),
    (dict(target="ppl"), ("curves",), 0, "fits.curves.ce.target", "produced: D_f"),
    (dict(group_by=("size", "lang")), ("curves",), 0, "fits.curves.ce.group_by", "'lang'"),
    (dict(group_by=("size", "D_p")), ("curves",), 0, "fits.curves.ce.group_by", "input column"),
    (dict(bootstrap_groups="run"), ("curves",), 0, "fits.curves.ce.bootstrap_groups", "'run'"),
    (dict(holdout="smallest:four"), ("curves",), 0, "fits.curves.ce.holdout", "smallest:k"),
    (dict(holdout="middle:2"), ("curves",), 0, "fits.curves.ce.holdout", "smallest:k"),
    (dict(holdout="largest:-1"), ("curves",), 0, "fits.curves.ce.holdout", "k must be"),
    (dict(holdout="smallest:0"), ("curves",), 0, "fits.curves.ce.holdout", "no point"),
    (dict(holdout="column:held"), ("curves",), 0, "fits.curves.ce.holdout", "'held'"),
    (dict(delta=0.0), ("curves",), 0, "fits.curves.ce.delta", "positive"),
    (dict(delta=-1e-3), ("curves",), 0, "fits.curves.ce.delta", "positive"),
    (dict(where="p >"), ("curves",), 0, "fits.curves.ce.where", "cannot select"),
    (dict(where="weight > 0"), ("curves",), 0, "fits.curves.ce.where", "weight"),
    (dict(hold_out="none"), ("curves",), 0, "fits.curves.ce.hold_out", "unknown curve field"),
    ({}, ("curves",), -1, "fits.bootstrap", "non-negative int"),
    ({}, ("curves",), 2.5, "fits.bootstrap", "non-negative int"),
    ({}, ("scatter",), 0, "report.plots", "unknown plot kind 'scatter'"),
    ({}, ("curves", "ghorbani"), 0, "report.plots", "no curve in fits.curves has law 'ghorbani'"),
    ({}, ("ladder",), 0, "report.plots", "'chinchilla'"),
    ({}, ("fernandes",), 0, "report.plots", "'fernandes_joint'"),
])
def test_check_curves_names_the_field(ce_changes, plots, bootstrap, field, detail):
  cfg = study_config(isik_curves(**ce_changes), plots=plots, bootstrap=bootstrap)
  with pytest.raises(ConfigError) as error:
    report.check_curves(cfg, PRODUCED)
  assert field in str(error.value) and detail in str(error.value)


def test_check_curves_takes_a_produced_holdout_column_and_a_missing_required_field():
  report.check_curves(study_config(isik_curves(holdout="column:held")), PRODUCED | {"held"})
  curves = isik_curves()
  del curves["ce"]["target"]
  with pytest.raises(ConfigError, match="fits.curves.ce.target is missing"):
    report.check_curves(study_config(curves), PRODUCED)


# ------------------------------------------------------------------------------------
# Fits from the report
# ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def isik_fits():
  return report.fit_all(study_config(isik_curves()), isik_frame())


def test_log_law_and_power_law_fit_the_smallest_four_and_predict_the_rest(isik_fits):
  assert sorted(isik_fits) == [(name, size, "aligned", "xa-ya", 15000)
                               for name in ("bleu", "ce") for size in ("small", "tiny")]
  bleu = isik_fits[("bleu", "tiny", "aligned", "xa-ya", 15000)]
  ce = isik_fits[("ce", "tiny", "aligned", "xa-ya", 15000)]
  for result in (bleu, ce):
    assert result.ok and (result.n_points, result.n_fit) == (5, 4)
    assert result.heldout_error < 1e-3
  assert ce.params == pytest.approx(dict(E=1.5, A=30.0, alpha=0.3), rel=1e-2)
  prediction = bleu.predict(np.array([400e3]))[0]
  assert prediction == pytest.approx(math.log(400e3 ** 0.3) ** 2, rel=1e-3)


def test_a_diverged_run_is_left_out_with_a_note(isik_fits):
  tiny = isik_fits[("ce", "tiny", "aligned", "xa-ya", 15000)]
  small = isik_fits[("ce", "small", "aligned", "xa-ya", 15000)]
  assert "left out 1 diverged run" in tiny.diagnostics
  assert not any("diverged" in note for note in small.diagnostics)


def test_a_fit_that_cannot_run_is_a_not_fitted_row():
  frame = isik_frame()
  frame.loc[frame["size"] == "small", "bleu"] = 0.0  # the log-law takes log(BLEU)
  cfg = study_config({"bleu": isik_curves()["bleu"]})
  result = report.fit_all(cfg, frame)[("bleu", "small", "aligned", "xa-ya", 15000)]
  assert result.status == "failed" and result.diagnostics[0].startswith("not fitted: ")


def test_holdout_by_column_holds_out_the_marked_rows():
  frame = isik_frame().assign(held=lambda f: f["D_p"] >= 200e3)
  cfg = study_config({"ce": isik_curves(holdout="column:held")["ce"]})
  result = report.fit_all(cfg, frame)[("ce", "tiny", "aligned", "xa-ya", 15000)]
  assert (result.n_fit, result.n_heldout) == (3, 2)


def ghorbani_frame() -> pd.DataFrame:
  sizes = np.array([2e6, 4e6, 8e6, 16e6])
  n_e, n_d = (a.ravel() for a in np.meshgrid(sizes, sizes))
  loss = 1e4 * n_e ** -0.2 * n_d ** -0.3 + 1.5
  return rows(dict(N_e=n_e, N_d=n_d, ce=loss), pair="xa-ya", kind="translation")


GHORBANI_CURVES = {"loss": dict(law="ghorbani", inputs=("N_e", "N_d"), target="ce",
                                group_by=("pair",), holdout="none", delta=1e-3)}


def test_ghorbani_recovers_the_encoder_and_decoder_exponents():
  fitted = report.fit_all(study_config(GHORBANI_CURVES), ghorbani_frame())
  result = fitted[("loss", "xa-ya")]
  assert result.ok
  assert result.params == pytest.approx(dict(beta=1e4, p_e=0.2, p_d=0.3, L_inf=1.5), rel=1e-3)


FRACTION = {0.25: 0.25 ** 0.7, 0.5: 0.5 ** 0.7, 1.0: 1.0}  # f(p) = p^0.7


def fernandes_frame() -> pd.DataFrame:
  """Two pairs with their own alpha; beta_p = beta_1 f(p)^-alpha; p = 0 rows the law cannot take."""
  frames = []
  for pair, alpha in (("xa-ya", 0.25), ("xa-za", 0.35)):
    for p in (0.0, 0.25, 0.5, 1.0):
      n = np.array([1e6, 3e6, 1e7, 3e7, 1e8])
      loss = 15.0 * FRACTION[p] ** -alpha * n ** -alpha + 1.2 if p else np.full(5, 9.0)
      frames.append(rows(dict(N=n, ce=loss), pair=pair, p=p))
  return pd.concat(frames, ignore_index=True)


FERNANDES_CURVES = {"multi": dict(law="fernandes_joint", inputs=("N", "p"), target="ce",
                                  group_by=("pair",), holdout="none", delta=1e-3,
                                  where="p > 0")}


@pytest.fixture(scope="module")
def fernandes_workdir(tmp_path_factory):
  """Written once: each fernandes_joint fit builds (and compiles) its own law."""
  workdir = tmp_path_factory.mktemp("fernandes")
  report.write(study_config(FERNANDES_CURVES, plots=("fernandes",)), workdir, fernandes_frame())
  return workdir


def test_fernandes_joint_fits_per_pair_on_n_and_p(fernandes_workdir):
  table = pd.read_csv(fernandes_workdir / "fits.csv").set_index("pair")
  assert list(table.index) == ["xa-ya", "xa-za"] and set(table["status"]) == {"ok"}
  assert (table["n_points"] == 15).all()  # the p = 0 rows are not selected
  assert table["alpha"].tolist() == pytest.approx([0.25, 0.35], rel=1e-3)
  derived = pd.read_csv(fernandes_workdir / "fits_derived.csv")
  for pair in table.index:
    mine = derived[derived["group"] == f"multi | pair={pair}"]
    fraction = dict(zip(mine["quantity"], mine["value"]))
    assert fraction == pytest.approx({f"f(p={p:g})": f for p, f in FRACTION.items()}, rel=1e-3)


def ladder_frame() -> pd.DataFrame:
  n, d = (a.ravel() for a in np.meshgrid([1e6, 3e6, 1e7, 3e7], [1e7, 3e7, 1e8, 3e8, 1e9]))
  loss = 1.7 + 400.0 * n ** -0.34 + 410.0 * d ** -0.28
  return rows(dict(N=n, D_p=d, loss=loss), kind="lm", pair="")


LADDER_CURVES = {"lm": dict(law="chinchilla", inputs=("N", "D_p"), target="loss", group_by=(),
                            holdout="largest:5", delta=1e-3)}


def test_chinchilla_on_n_and_d_p_predicts_the_largest_model():
  cfg = study_config(LADDER_CURVES, plots=("ladder",))
  result = report.fit_all(cfg, ladder_frame())[("lm",)]
  assert result.ok and (result.n_fit, result.n_heldout) == (15, 5)
  assert result.params == pytest.approx(dict(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28),
                                        rel=1e-3)
  assert result.heldout_error < 1e-4
  derived = report.derived_quantities(report.curves(cfg), ladder_frame(), {("lm",): result})
  exponent = [r["value"] for r in derived if r["quantity"].startswith("N* exponent")]
  assert exponent == pytest.approx([0.28 / (0.34 + 0.28)], rel=1e-3)
  assert any(r["quantity"].startswith("D*(C=") for r in derived)


# ------------------------------------------------------------------------------------
# Block bootstrap: passed only when fits.fit takes it and the curve pools several blocks
# ------------------------------------------------------------------------------------

def recording_fit(calls):
  real_fit = fits.core.fit

  def fit(law_or_name, x, y, *, holdout=None, delta=None, bootstrap=0, seed=0,
          bootstrap_groups=None):
    calls.append(bootstrap_groups)
    return real_fit(law_or_name, x, y, holdout=holdout, delta=delta, bootstrap=0, seed=seed)
  return fit


def test_block_bootstrap_labels_go_to_fits_when_there_are_several_blocks(monkeypatch):
  calls = []
  monkeypatch.setattr(fits.core, "fit", recording_fit(calls))
  frame = isik_frame()
  frame.loc[frame["size"] == "small", "pretrain_key"] = "one_run"
  cfg = study_config({"ce": isik_curves(bootstrap_groups="pretrain_key")["ce"]}, bootstrap=4)
  fitted = report.fit_all(cfg, frame)
  small, tiny = calls  # sorted groups: small first
  assert small is None and list(tiny) == [0, 0, 1, 1, 2]
  notes = fitted[("ce", "small", "aligned", "xa-ya", 15000)].diagnostics
  assert "point bootstrap: the fit holds a single pretrain_key value" in notes


# ------------------------------------------------------------------------------------
# Tables and plots
# ------------------------------------------------------------------------------------

def plot_names(workdir):
  return sorted(p.name for p in (workdir / "plots").glob("*.png"))


def test_write_tables_and_curves_plots(tmp_path):
  report.write(study_config(isik_curves()), tmp_path, isik_frame())
  assert plot_names(tmp_path) == ["bleu_small.png", "bleu_tiny.png", "ce_small.png",
                                  "ce_tiny.png"]
  markdown = (tmp_path / "fits.md").read_text()
  assert "bleu \\| size=tiny \\| mixture=aligned \\| pair=xa-ya \\| D_f=15000" in markdown
  assert "\\toprule" in (tmp_path / "fits.tex").read_text()
  table = pd.read_csv(tmp_path / "fits.csv")
  assert list(table.columns[:6]) == ["group", "curve", *ISIK_GROUP]
  assert set(table["law"]) == {"log_law", "power_law"} and (table["n_heldout"] == 1).all()
  assert not (tmp_path / "fits_derived.csv").exists()


def test_write_ghorbani_plots(tmp_path):
  cfg = study_config(GHORBANI_CURVES, plots=("ghorbani", "curves"))
  report.write(cfg, tmp_path, ghorbani_frame())
  assert plot_names(tmp_path) == ["ghorbani_loss_xa-ya.png", "loss_xa-ya.png"]
  derived = pd.read_csv(tmp_path / "fits_derived.csv")
  assert derived["value"].tolist() == pytest.approx([0.2 / 0.5], rel=1e-3)


def test_write_fernandes_plots(fernandes_workdir):
  assert plot_names(fernandes_workdir) == ["fernandes_fraction_multi.png", "fernandes_multi.png"]
  assert "f(p=0.25)" in (fernandes_workdir / "fits.md").read_text()


def test_write_ladder_plots(tmp_path):
  report.write(study_config(LADDER_CURVES, plots=("ladder",)), tmp_path, ladder_frame())
  assert plot_names(tmp_path) == ["ladder_lm.png"]
  assert "chinchilla" in (tmp_path / "fits.csv").read_text()
