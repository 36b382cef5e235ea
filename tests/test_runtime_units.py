"""Config validation, grid expansion, results rows, metrics and checkpoints."""
import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from scaling import checkpoint
from scaling import config as config_lib
from scaling import grid
from scaling import metrics
from scaling import optim
from scaling import results


def _cfg(**grid_overrides):
  cfg = config_lib.base_config()
  cfg.mixtures = {"aligned": {"xa": 1.0, "ya": 1.0}, "other": {"xb": 1.0}}
  cfg.grid.size = ("micro",)
  cfg.grid.mixture = ("aligned", "other")
  cfg.grid.D_p = (1000, 2000, 4000)
  cfg.grid.pair = ("xa-ya",)
  cfg.grid.D_f = (500,)
  for k, v in grid_overrides.items():
    cfg.grid[k] = v
  return cfg


def test_valid_config_passes():
  config_lib.validate(_cfg())


@pytest.mark.parametrize("mutate, field", [
    (lambda c: setattr(c.pretrain, "lr", 1.0), "pretrain.lr"),
    (lambda c: setattr(c, "epochs", 3), "epochs"),
    (lambda c: setattr(c.grid, "width", (1, 2)), "grid.width"),
])
def test_unknown_field_is_named(mutate, field):
  cfg = _cfg()
  mutate(cfg)
  with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
    config_lib.validate(cfg)


def test_unknown_grid_axis_says_grid_axis():
  cfg = _cfg()
  cfg.grid.width = (1,)
  with pytest.raises(config_lib.ConfigError, match="unknown grid axis 'grid.width'"):
    config_lib.validate(cfg)


def test_unregistered_mixture_is_named():
  with pytest.raises(config_lib.ConfigError, match="'nowhere'"):
    config_lib.validate(_cfg(mixture=("aligned", "nowhere")))


@pytest.mark.parametrize("d_p", [(1000, 1000, 2000), (2000, 1000), (1000, -5)])
def test_d_p_must_increase(d_p):
  with pytest.raises(config_lib.ConfigError, match="grid.D_p"):
    config_lib.validate(_cfg(D_p=d_p))


def test_bad_pair_and_empty_axis():
  with pytest.raises(config_lib.ConfigError, match="grid.pair"):
    config_lib.validate(_cfg(pair=("xaya",)))
  with pytest.raises(config_lib.ConfigError, match="grid.size is empty"):
    config_lib.validate(_cfg(size=()))


def test_load_reads_a_config_file(tmp_path):
  path = tmp_path / "c.py"
  path.write_text("from scaling import config\n"
                  "def get_config():\n  c = config.base_config()\n  c.pretrain.bogus = 1\n  return c\n")
  with pytest.raises(config_lib.ConfigError, match="pretrain.bogus"):
    config_lib.load(str(path))


def test_grid_shares_pretraining_and_keys_are_content_addressed():
  plan = grid.expand(_cfg())
  assert len(plan.trains) == 2               # size x mixture
  assert len(plan.finetunes) == 2 * 3        # x D_p x pair x D_f
  assert len(plan.evaluates) == len(plan.finetunes)
  assert {f.source.train.key for f in plan.finetunes} == {t.key for t in plan.trains}
  again = grid.expand(_cfg())
  assert [e.key for e in again.evaluates] == [e.key for e in plan.evaluates]


def test_finetune_change_keeps_pretrain_keys():
  base = grid.expand(_cfg())
  cfg = _cfg()
  cfg.finetune.steps = 7
  changed = grid.expand(cfg)
  assert [t.key for t in changed.trains] == [t.key for t in base.trains]
  assert {f.key for f in changed.finetunes}.isdisjoint({f.key for f in base.finetunes})


def test_adding_a_d_p_keeps_the_pretraining_run():
  base = grid.expand(_cfg())
  more = grid.expand(_cfg(D_p=(1000, 2000, 4000, 8000)))
  assert [t.key for t in more.trains] == [t.key for t in base.trains]
  assert {f.key for f in base.finetunes} <= {f.key for f in more.finetunes}


def _train_keys(cfg) -> list[str]:
  return [t.key for t in grid.expand(cfg).trains]


def test_keys_hash_the_full_size_and_the_code_constants_not_log_every(monkeypatch):
  base = _train_keys(_cfg())
  # The same name with one field changed (an inline size) is a different model.
  cfg = _cfg()
  cfg.sizes = {"micro": {"base": "micro", "d_ff": 96}}
  assert set(_train_keys(cfg)).isdisjoint(base)
  # An optimizer constant edited in the code re-runs what it trained.
  monkeypatch.setitem(optim.CONSTANTS["adamw"], "b2", 0.999)
  assert set(_train_keys(_cfg())).isdisjoint(base)
  monkeypatch.undo()
  assert _train_keys(_cfg()) == base
  # What only changes how often we print, or how memory is traded, is not in the key.
  cfg = _cfg()
  cfg.pretrain.log_every = 7
  cfg.model.remat = "full"
  assert _train_keys(cfg) == base


def _translation_cfg(**grid_overrides):
  cfg = config_lib.base_config()
  cfg.pretrain.objective = "translation"
  cfg.grid.size = ("micro",)
  cfg.grid.D_p = (1000, 2000)
  cfg.grid.pair = ("xa-ya", "xa-za")
  for k, v in grid_overrides.items():
    cfg.grid[k] = v
  return cfg


def test_ghorbani_shape_axes_train_each_pair_from_scratch():
  plan = grid.expand(_translation_cfg(encoder_layers=(1, 2), decoder_layers=(1, 3)))
  assert len(plan.trains) == 4 * 2 and not plan.finetunes
  shapes = {(t.size.num_encoder_layers, t.size.num_decoder_layers) for t in plan.trains}
  assert shapes == {(1, 1), (1, 3), (2, 1), (2, 3)}
  # each run is evaluated on its own pair, at every budget
  assert len(plan.evaluates) == 8 * 2
  assert all(e.pair == e.weights.train.data.label for e in plan.evaluates)


def test_fernandes_weight_axis_builds_mixtures_and_evaluates_each_pair():
  plan = grid.expand(_translation_cfg(p=(0.0, 0.3, 1.0), D_p=(1000,)))
  assert [t.data.rates for t in plan.trains] == [
      (("xa-za", 1.0),), (("xa-ya", 0.3), ("xa-za", 0.7)), (("xa-ya", 1.0),)]
  assert len(plan.evaluates) == 3 * 2
  weights = sorted(e.weights.train.data.share(e.pair) for e in plan.evaluates)
  assert weights == pytest.approx([0.0, 0.0, 0.3, 0.7, 1.0, 1.0])


def test_wsd_ladder_branches_one_run_per_size():
  cfg = config_lib.base_config()
  cfg.pretrain.update(objective="causal_lm", schedule="wsd")
  cfg.mixtures = {"text": {"xa": 1.0}}
  cfg.grid.update(size=("lm_micro",), mixture=("text",), D_p=(1000, 2000, 4000))
  plan = grid.expand(cfg)
  assert len(plan.trains) == 1 and len(plan.cooldowns) == 3
  assert all(e.pair == grid.LM and isinstance(e.weights.stage, grid.Cooldown)
             for e in plan.evaluates)


def test_d_f_zero_evaluates_the_trained_model_directly():
  plan = grid.expand(_cfg(D_f=(0, 500)))
  assert len(plan.finetunes) == 2 * 3
  direct = [e for e in plan.evaluates if e.weights.finetune is None]
  assert len(direct) == 2 * 3 and all(isinstance(e.weights.stage, grid.Train) for e in direct)


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.eval.update(max_examples=0), "eval.max_examples"),
    (lambda c: c.finetune.update(steps=0), "finetune.steps"),
    (lambda c: c.grid.update(p=(0.5,)), "grid.mixture and grid.p"),
    (lambda c: c.grid.update(D_f=(-1,)), "grid.D_f"),
    (lambda c: c.grid.update(size=("lm_micro",), encoder_layers=(2,)), "grid.encoder_layers"),
    (lambda c: c.grid.update(d_model=(24,)), "grid.d_model"),
    (lambda c: setattr(c, "sizes", {"odd": {"base": "micro", "relative_attention_max_distance": 16}})
     or c.grid.update(size=("odd",)), "sizes.odd.*relative_attention_max_distance"),
    (lambda c: c.pretrain.update(objective="mlm"), "pretrain.objective"),
    (lambda c: c.pretrain.update(schedule="linear"), "pretrain.schedule"),
    (lambda c: c.eval.update(decode="sampling"), "eval.decode"),
])
def test_bad_fields_are_named(edit, field):
  cfg = _cfg()
  edit(cfg)
  with pytest.raises(config_lib.ConfigError, match=field):
    config_lib.validate(cfg)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_weight_axis_outside_unit_interval(p):
  with pytest.raises(config_lib.ConfigError, match="grid.p must hold weights in"):
    config_lib.validate(_translation_cfg(p=(0.5, p)))


def test_results_rows_round_trip(tmp_path):
  for i, d_p in enumerate([2000, 1000]):
    results.write_row(tmp_path, dict(key=f"k{i}", status="ok", size="micro", mixture="a",
                                     pair="xa-ya", D_p=d_p, D_f=5, bleu=1.5 * i, ce=float("nan")))
  frame = results.load(tmp_path)
  assert list(frame["D_p"]) == [1000, 2000]
  assert set(results.COLUMNS) == set(frame.columns)
  assert frame["ce"].isna().all()            # NaN is stored as null, read back as missing
  assert not list(tmp_path.glob("results/.*.tmp"))
  with pytest.raises(ValueError, match="unknown columns"):
    results.write_row(tmp_path, dict(key="x", blue=3.0))


def test_metrics_on_text():
  refs = ["the cat sat on the mat", "a dog ran home"]
  perfect = metrics.translation_scores(refs, refs)
  assert perfect["bleu"] == pytest.approx(100.0)
  assert perfect["sacrebleu"].startswith("nrefs:1|")
  assert metrics.translation_scores(["zz qq", "yy"], refs)["bleu"] < 5.0
  assert 0 < metrics.translation_scores(["the cat sat", "a dog ran"], refs)["chrf"] < 100
  with pytest.raises(ValueError, match="differ in length"):
    metrics.translation_scores(["a"], refs)


def test_checkpoint_round_trip(tmp_path):
  model = {"w": jnp.arange(6.0).reshape(2, 3), "b": {"n": jnp.ones(4, jnp.int32)}}
  opt = {"mu": jnp.zeros(3)}
  checkpoint.save(tmp_path / "run", 1000, dict(model=model, optimizer=opt), dict(tokens=1003))
  checkpoint.save(tmp_path / "run", 2000, dict(model=model, optimizer=opt), dict(tokens=2010))
  assert checkpoint.steps(tmp_path / "run") == [1000, 2000]
  items, meta = checkpoint.restore(tmp_path / "run", 1000, dict(model=model))
  assert set(items) == {"model"} and meta == {"tokens": 1003}
  np.testing.assert_array_equal(items["model"]["w"], model["w"])
  assert items["model"]["b"]["n"].dtype == jnp.int32
  with pytest.raises(FileNotFoundError, match="1500"):
    checkpoint.restore(tmp_path / "run", 1500, dict(model=model))
