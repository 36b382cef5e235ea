"""Optimizers and schedules (scaling/optim.py): schedule values at key steps, WSD's
stable phase independent of the budget, constants that reach the stage keys, config
checks naming the field, and Adafactor training on data, FSDP and tensor meshes."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from models import sizes
from scaling import config as config_lib
from scaling import mesh as mesh_lib
from scaling import optim, train


def step_cfg(schedule, *, peak=1.0, warmup=10, optimizer="adamw", weight_decay=0.0,
             cooldown_fraction=0.2, cooldown_shape="linear", final_lr_fraction=0.0):
  return train.StepConfig(optimizer, peak, warmup, schedule, weight_decay,
                          cooldown_fraction, cooldown_shape, final_lr_fraction)


# ---------------------------------------------------------------- schedules

@pytest.mark.parametrize("schedule, step, total, expected", [
    ("rsqrt", 0, 1000, 0.1),           # linear warm-up: the first update gets 1/warmup
    ("rsqrt", 9, 1000, 1.0),           # peak at the end of warm-up
    ("rsqrt", 39, 1000, 0.5),          # then peak * sqrt(warmup / step)
    ("constant", 0, 1000, 0.1),
    ("constant", 500, 1000, 1.0),
    ("cosine", 10, 110, 1.0),          # cosine from peak after warm-up ...
    ("cosine", 60, 110, 0.5),          # ... half-way ...
    ("cosine", 110, 110, 0.0),         # ... to final_lr_fraction * peak at total_steps
    ("cosine", 500, 110, 0.0),
    ("wsd", 79, 100, 1.0),             # stable until total * (1 - cooldown_fraction)
    ("wsd", 80, 100, 1.0),             # the cooldown starts from the stable value ...
    ("wsd", 90, 100, 0.5),             # ... linearly ...
    ("wsd", 99, 100, 0.05),            # ... so the last update still moves
    ("wsd", 100, 100, 0.0),
])
def test_schedule_values_at_key_steps(schedule, step, total, expected):
  assert optim.learning_rate_at(step_cfg(schedule), step, total) == pytest.approx(expected)


def test_cosine_final_fraction_and_wsd_one_minus_sqrt():
  cosine = step_cfg("cosine", peak=2.0, final_lr_fraction=0.1)
  assert optim.learning_rate_at(cosine, 110, 110) == pytest.approx(0.2)
  assert optim.learning_rate_at(cosine, 60, 110) == pytest.approx(0.2 + 1.8 * 0.5)
  wsd = step_cfg("wsd", cooldown_shape="1-sqrt")
  assert optim.learning_rate_at(wsd, 90, 100) == pytest.approx(1 - np.sqrt(0.5))
  assert optim.learning_rate_at(wsd, 100, 100) == 0.0


def test_wsd_stable_phase_does_not_depend_on_the_budget():
  cfg = step_cfg("wsd", peak=3e-3, warmup=20)
  totals = (100, 250, 1000, 4000)
  branches = [optim.wsd_branch_step(cfg, total) for total in totals]
  assert branches == [80, 200, 800, 3200]
  for total, branch in zip(totals, branches):
    for step in range(0, branch, 7):
      assert optim.learning_rate_at(cfg, step, total) == optim.learning_rate_at(cfg, step, 10**6)
    # the branch cools down from exactly where the stable run is at its branch point
    assert optim.learning_rate_at(cfg, branch, total) == pytest.approx(3e-3)
    assert optim.learning_rate_at(cfg, branch + 1, total) < 3e-3


def test_unknown_schedule_and_bad_total_are_errors():
  with pytest.raises(ValueError, match="schedule 'linear'"):
    optim.learning_rate_at(step_cfg("linear"), 0, 10)
  with pytest.raises(ValueError, match="total_steps"):
    optim.learning_rate_at(step_cfg("cosine"), 0, 0)


# ---------------------------------------------------------------- constants

def test_constants_are_copies_and_editing_one_changes_them(monkeypatch):
  before = optim.constants("adamw")
  assert before["b2"] == 0.98 and before["clip_global_norm"] == 1.0
  before["b2"] = 0.5                      # a copy: the module is untouched
  assert optim.constants("adamw")["b2"] == 0.98
  adafactor = optim.constants("adafactor")
  monkeypatch.setitem(optim.CONSTANTS["adafactor"], "decay_rate", 0.9)
  assert optim.constants("adafactor") == {**adafactor, "decay_rate": 0.9} != adafactor
  with pytest.raises(ValueError, match="optimizer 'sgd'"):
    optim.constants("sgd")


def test_adafactor_is_optax_adafactor_with_these_constants():
  params = {"w": jnp.linspace(-1.0, 1.0, 128 * 256).reshape(128, 256),
            "b": jnp.linspace(0.5, 1.5, 7)}
  grads = jax.tree.map(lambda p: jnp.cos(3.0 * p), params)
  ours = optim.make_optimizer(step_cfg("constant", optimizer="adafactor"))
  reference = optax.adafactor(learning_rate=0.01)
  state, ref_state = ours.init(params), reference.init(params)
  for _ in range(3):
    updates, state = ours.update(grads, optim.with_learning_rate(state, 0.01), params)
    ref_updates, ref_state = reference.update(grads, ref_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, ref_updates)


def test_the_learning_rate_is_set_not_compiled():
  opt = optim.make_optimizer(step_cfg("rsqrt"))
  params = {"w": jnp.ones((3,))}
  state = opt.init(params)
  assert float(optim.current_learning_rate(state)) == 0.0  # nothing moves until set

  @jax.jit
  def step(state, learning_rate):
    updates, state = opt.update(params, optim.with_learning_rate(state, learning_rate), params)
    return updates, state

  small, _ = step(state, jnp.float32(1e-4))
  large, state = step(state, jnp.float32(1e-2))
  assert step._cache_size() == 1
  assert float(optim.current_learning_rate(state)) == pytest.approx(1e-2)
  assert jnp.all(jnp.abs(large["w"]) > jnp.abs(small["w"]))


# ---------------------------------------------------------------- config checks

def section(**overrides):
  fields = dict(optimizer="adamw", schedule="rsqrt", learning_rate=1e-3, warmup_steps=10,
                weight_decay=0.0, cooldown_fraction=0.2, cooldown_shape="linear",
                final_lr_fraction=0.0)
  return ml_collections.ConfigDict({**fields, **overrides})


@pytest.mark.parametrize("overrides, message", [
    (dict(optimizer="sgd"), r"pretrain\.optimizer must be one of"),
    (dict(schedule="linear"), r"pretrain\.schedule must be one of"),
    (dict(cooldown_fraction=0.0), r"pretrain\.cooldown_fraction must be a number in \(0, 1\)"),
    (dict(cooldown_fraction=1.0), r"pretrain\.cooldown_fraction"),
    (dict(cooldown_shape="cubic"), r"pretrain\.cooldown_shape must be one of"),
    (dict(final_lr_fraction=1.5), r"pretrain\.final_lr_fraction"),
    (dict(weight_decay=-0.1), r"pretrain\.weight_decay"),
    (dict(warmup_steps=-1), r"pretrain\.warmup_steps"),
    (dict(optimizer="adafactor", weight_decay=1e-3, schedule="wsd"),
     r"pretrain\.schedule='wsd' anneals the learning rate to 0.*pretrain\.weight_decay"),
    (dict(optimizer="adafactor", weight_decay=1e-3, schedule="cosine"),
     r"pretrain\.schedule='cosine'"),
])
def test_check_names_the_field(overrides, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    optim.check("pretrain", section(**overrides))


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(optimizer="adafactor", schedule="wsd"),                       # no weight decay
    dict(optimizer="adafactor", weight_decay=1e-3, schedule="rsqrt"),
    dict(optimizer="adafactor", weight_decay=1e-3, schedule="cosine", final_lr_fraction=0.1),
    dict(optimizer="adamw", weight_decay=0.1, schedule="wsd", cooldown_shape="1-sqrt"),
])
def test_check_accepts(overrides):
  optim.check("finetune", section(**overrides))


# ---------------------------------------------------------------- sharding names

def test_factored_moments_are_named_after_the_axes_they_keep():
  names = ("embed", "heads", "kv")
  param = nnx.Param(jnp.zeros((256, 2, 128)), out_sharding=names, eager_sharding=False)
  norm = nnx.Param(jnp.zeros((256,)), out_sharding=("norm",), eager_sharding=False)
  params = nnx.State({"attention": param, "norm": norm})
  state = optim.make_optimizer(step_cfg("constant", optimizer="adafactor")).init(params)
  factored = state.inner_state[0]
  name = lambda v: v.get_metadata()["out_sharding"]
  # largest axis 0, second largest axis 2: rows drop axis 0, columns drop axis 2
  assert name(factored.v_row["attention"]) == ("heads", "kv")
  assert name(factored.v_col["attention"]) == ("embed", "heads")
  assert name(factored.v["attention"]) == (None,)          # unused placeholder
  assert name(factored.v["norm"]) == ("norm",)             # rank 1: the full moment
  assert name(factored.v_row["norm"]) == (None,)


# ---------------------------------------------------------------- training on meshes

# micro, widened so that Adafactor factors its matrices (two dims >= 128) and every
# sharded dimension divides 8.
FACTORED = dataclasses.replace(sizes.get("micro"), d_model=128, num_heads=4, head_dim=16,
                               d_ff=256, vocab_size=128)


@pytest.fixture(scope="module")
def eight_devices():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  targets = rng.integers(2, FACTORED.vocab_size, (8, 8))
  return dict(encoder_input_tokens=rng.integers(2, FACTORED.vocab_size, (8, 12)),
              decoder_input_tokens=np.pad(targets, ((0, 0), (1, 0)))[:, :-1],
              decoder_target_tokens=targets, decoder_loss_weights=np.ones((8, 8), np.float32))


def train_steps(mesh_cfg, batch, *, optimizer, param_dtype, steps=10):
  mesh = mesh_lib.make_mesh(mesh_cfg)
  model_cfg = train.ModelConfig(FACTORED, param_dtype=param_dtype)
  cfg = step_cfg("constant", optimizer=optimizer, peak=1e-2, warmup=0)
  trainer = train.Trainer(model_cfg, cfg, mesh)
  state, losses = trainer.init(0), []
  for _ in range(steps):
    state, metrics = trainer.step(state, batch, optim.learning_rate_at(cfg, 0, steps))
    losses.append(float(metrics["loss"]))
    assert_laid_out(state, trainer.state_sharding)
  return trainer, state, losses


def assert_laid_out(state, shardings):
  def same(array, sharding):
    assert array.sharding.is_equivalent_to(sharding, array.ndim), (array.sharding, sharding)
  jax.tree.map(same, state, shardings)


@pytest.mark.parametrize("mesh_cfg, optimizer, param_dtype", [
    (mesh_lib.MeshConfig(data=8), "adafactor", "float32"),
    (mesh_lib.MeshConfig(data=2, fsdp=4), "adafactor", "bfloat16"),
    (mesh_lib.MeshConfig(data=2, tensor=4), "adafactor", "float32"),
    (mesh_lib.MeshConfig(data=2, fsdp=2, tensor=2), "adamw", "bfloat16"),
], ids=str)
def test_training_on_every_layout(eight_devices, batch, mesh_cfg, optimizer, param_dtype):
  _, state, losses = train_steps(mesh_cfg, batch, optimizer=optimizer, param_dtype=param_dtype)
  assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.5, losses
  assert {p.dtype for p in jax.tree.leaves(state.model.params)} == {jnp.dtype(param_dtype)}
  assert optim.current_learning_rate(state.opt_state).dtype == jnp.float32
  if optimizer == "adafactor":
    moments = state.opt_state.inner_state[0]
    wi_0 = lambda tree: tree["decoder_layers"][0]["mlp"]["wi_0"][...]
    assert wi_0(moments.v_row).sharding.spec == mesh_lib.logical_spec(("embed",))
    assert wi_0(moments.v_col).sharding.spec == mesh_lib.logical_spec(("mlp",))
    assert wi_0(moments.v).sharding.spec == mesh_lib.logical_spec((None,))
