"""The four study configs: every variant validates before any compute, cpu and micro
keep the full setting's grid shape, and every :micro variant runs end to end.

Each study's micro run is ONE test (parametrized by study), so it runs once however
pytest-xdist spreads the tests over workers; its assertions would fail if the study's
grid, training kind, columns or law were wrong.
"""
import math
import pathlib

import pytest

from scaling import config as config_lib
from scaling import grid
from scaling import report
from scaling import results
from scaling import runner

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDIES = ("isik2024", "ghorbani2021", "fernandes2023", "lm_ladder")
VARIANTS = ("full", "cpu", "micro")
# What makes each study itself: training kind, the law of each curve, the figure.
SHAPES = {
    "isik2024": ("span_corruption", {"bleu": "log_law", "ce": "power_law"}, ("curves",)),
    "ghorbani2021": ("translation", {"ce": "ghorbani"}, ("ghorbani",)),
    "fernandes2023": ("translation", {"ce": "fernandes_joint"}, ("fernandes",)),
    "lm_ladder": ("causal_lm", {"loss": "chinchilla"}, ("ladder",)),
}


def load(study: str, variant: str | None = None):
  path = ROOT / "configs" / f"{study}.py"
  return config_lib.load(f"{path}:{variant}" if variant else str(path))


def checked_plan(cfg) -> grid.Plan:
  """What runner.prepare checks before building anything: grid, sizes, curves, plots."""
  plan = grid.expand(cfg)
  report.check_curves(cfg, runner.produced_columns(plan))
  return plan


def grid_axes(cfg) -> set[str]:
  return {axis for axis in config_lib.GRID_AXES if cfg.grid[axis]}


# ------------------------------------------------------------------ every variant

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("study", STUDIES)
def test_variant_validates_and_keeps_the_study_shape(study, variant):
  cfg = load(study, variant)
  plan = checked_plan(cfg)
  objective, laws, plots = SHAPES[study]
  assert cfg.pretrain.objective == objective
  assert {name: c.law for name, c in cfg.fits.curves.items()} == laws
  assert tuple(cfg.report.plots) == plots
  assert grid_axes(cfg) == grid_axes(load(study, "full"))  # the same grid shape
  assert cfg.data.source == ("tfds" if variant == "full" else "synthetic")
  assert plan.evaluates


def test_default_variant_is_the_full_setting():
  for study in STUDIES:
    assert load(study).to_dict() == load(study, "full").to_dict()


def test_unknown_variant_is_a_config_error():
  with pytest.raises(config_lib.ConfigError, match="unknown variant 'gpu'"):
    load("isik2024", "gpu")


# ------------------------------------------------------------------ the full settings

def test_isik_full_is_the_papers_setting():
  cfg = load("isik2024")
  assert cfg.grid.size == ("isik_t5_3b",)
  assert cfg.data.vocabulary.endswith("mc4.250000.100extra/sentencepiece.model")
  assert {"en", "de", "fr", "ro", "en_de", "en30_fr70", "en70_fr30"} <= set(cfg.grid.mixture)
  assert cfg.data.pretrain_sources.de.splits.train == "de"
  assert cfg.pretrain.batch_size == 256 and cfg.pretrain.input_length == 512
  assert (cfg.pretrain.optimizer, cfg.pretrain.schedule, cfg.pretrain.warmup_steps) == (
      "adafactor", "rsqrt", 10_000)
  assert cfg.pretrain.learning_rate / math.sqrt(cfg.pretrain.warmup_steps) == pytest.approx(1e-4)
  assert cfg.finetune.batch_size == 128 and cfg.finetune.steps == 300
  assert set(cfg.grid.pair) == {"en-de", "en-fr", "en-ro"}
  assert {6_000_000, 42_000_000, 625_000} <= set(cfg.grid.D_f)
  assert len(cfg.grid.D_p) > 4  # points beyond the 4 fitted ones are predicted


def test_ghorbani_full_varies_encoder_and_decoder_depth():
  cfg = load("ghorbani2021")
  plan = checked_plan(cfg)
  shapes = {(t.size.num_encoder_layers, t.size.num_decoder_layers) for t in plan.trains}
  assert len(shapes) == len(cfg.grid.encoder_layers) * len(cfg.grid.decoder_layers) >= 9
  assert not plan.finetunes and len(cfg.grid.D_p) == 1
  assert all(t.size.d_model == 1024 for t in plan.trains)


def test_fernandes_full_has_the_papers_weights_and_sizes():
  cfg = load("fernandes2023")
  assert cfg.grid.p == (0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0)
  assert cfg.grid.size == tuple(f"ladder_{k}" for k in range(1, 9))
  assert len(cfg.grid.pair) == 2


def test_lm_ladder_full_spans_the_compute_optimal_ratio():
  cfg = load("lm_ladder")
  plan = checked_plan(cfg)
  assert cfg.pretrain.schedule == "wsd" and len(plan.trains) == 8
  assert len(plan.cooldowns) == 8 * len(cfg.grid.D_p)
  from models import accounting
  for train in plan.trains:  # every size has a budget within 2x of 20 tokens / param
    ratios = [d / accounting.param_counts(train.size)["total"] for d in cfg.grid.D_p]
    assert any(10 <= r <= 40 for r in ratios), (train.size_name, ratios)


# ------------------------------------------------------------------ micro, end to end

def check_isik(cfg, frame):
  assert frame["bleu"].notna().all() and frame["ce"].notna().all()
  assert frame["bleu"].between(0, 100).all() and frame["ce"].between(0, 20).all()
  assert set(frame["mixture"]) == set(cfg.grid.mixture)
  assert sorted(set(frame["D_p"])) == list(cfg.grid.D_p)
  assert set(frame["D_f"]) == set(cfg.grid.D_f) and frame["finetune_key"].notna().all()
  assert (frame["D_p_seen"] >= frame["D_p"]).all()


def check_ghorbani(cfg, frame):
  assert frame["N_e"].notna().all() and frame["N_d"].notna().all()
  layers = set(zip(frame["encoder_layers"], frame["decoder_layers"]))
  assert layers == {(e, d) for e in cfg.grid.encoder_layers for d in cfg.grid.decoder_layers}
  for column, depth in (("N_e", "encoder_layers"), ("N_d", "decoder_layers")):
    by_depth = frame.groupby(depth)[column].unique()
    assert all(len(v) == 1 for v in by_depth) and by_depth.map(lambda v: v[0]).is_monotonic_increasing
  assert (frame["pair"] == frame["mixture"]).all()  # each pair trained on its own
  assert (frame["D_f"] == 0).all() and frame["ce"].notna().all()


def check_fernandes(cfg, frame):
  assert set(frame["pair"]) == set(cfg.grid.pair)
  assert frame["p"].between(0, 1).all() and frame["ce"].notna().all()
  assert ((frame["p"] > 0) & (frame["p"] < 1)).any()
  for pair, rows in frame.groupby("pair"):  # the evaluated pair's own weight
    assert sorted(set(rows["p"])) == sorted(set(cfg.grid.p))
  for _, rows in frame.groupby(["size", "mixture"]):  # one model, evaluated on both pairs
    assert len(rows) == 2 and rows["p"].sum() == pytest.approx(1.0)


def check_lm_ladder(cfg, frame):
  assert (frame["kind"] == "lm").all() and (frame["branch"] == "cooldown").all()
  assert (frame["schedule"] == "wsd").all()
  assert frame["loss"].notna().all() and frame["bits_per_token"].notna().all()
  assert frame["bits_per_token"].to_numpy() == pytest.approx(frame["loss"].to_numpy() / math.log(2))
  assert frame["N"].nunique() == len(cfg.grid.size)
  assert sorted(set(frame["D_p"])) == list(cfg.grid.D_p)


CHECKS = {"isik2024": check_isik, "ghorbani2021": check_ghorbani,
          "fernandes2023": check_fernandes, "lm_ladder": check_lm_ladder}


@pytest.mark.parametrize("study", STUDIES)
def test_micro_variant_runs_end_to_end(study, tmp_path):
  cfg = load(study, "micro")
  plan = checked_plan(cfg)
  summary = runner.run(cfg, tmp_path)
  assert summary.failed == 0 and summary.ran == plan.n_stages
  frame = results.load(tmp_path)
  assert len(frame) == len(plan.evaluates)
  assert set(frame["status"]) == {"ok"}
  CHECKS[study](cfg, frame)
  fitted = (tmp_path / "fits.csv").read_text()
  for curve in cfg.fits.curves.values():
    assert curve.law in fitted
  plots = [p.name for p in (tmp_path / "plots").glob("*.png")]
  for kind in cfg.report.plots:
    prefix = "" if kind == "curves" else f"{kind}_"
    assert any(name.startswith(prefix) for name in plots), (kind, plots)
