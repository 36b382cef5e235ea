"""Optimizers and learning-rate schedules: the one home of both.

* `make_optimizer(step_cfg)`: 'adamw' (global-norm clipping, then AdamW) or
  'adafactor' (T5X's setting: factored second moments, update clipping,
  parameter-scaled steps, no first moment). Every fixed constant lives in
  `CONSTANTS`; stage keys hash `constants(optimizer)`, so editing one re-runs the
  stages it affects instead of silently reusing their checkpoints.
* The learning rate is a hyperparameter in the optimizer state
  (`optax.inject_hyperparams`), written by the jitted step from an argument
  (`with_learning_rate`). The host computes it with `learning_rate_at`, so a schedule
  is plain Python and changing it never recompiles the step.
* Schedules, by name: 'rsqrt' (T5), 'constant', 'cosine', 'wsd' (warm-up, stable,
  decay; Hagele et al. 2024). A WSD run's stable phase does not depend on its total
  length, so one stable run serves every budget: the branch for `total_steps`
  restarts from its checkpoint at `wsd_branch_step(step_cfg, total_steps)`.
* `name_factored_moments`: Adafactor's factored moments drop one dimension of their
  parameter; this gives them the logical names of the dimensions they keep, so the
  optimizer state can be sharded like the parameters on any mesh.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("rsqrt", "constant", "cosine", "wsd")
COOLDOWN_SHAPES = ("linear", "1-sqrt")

# Every fixed constant of each optimizer, in one place (the stage keys hash them).
CONSTANTS: dict[str, dict[str, Any]] = {
    "adamw": {
        "clip_global_norm": 1.0,   # gradients clipped to this global norm first
        "b1": 0.9,
        "b2": 0.98,                # T5's (and the Transformer's) beta2
        "eps": 1e-8,
    },
    # T5X's Adafactor defaults (t5x/adafactor.py), the optimizer of T5 and of Isik et al.
    "adafactor": {
        "decay_rate": 0.8,               # second moments decay with 1 - (t + 1)**-0.8
        "min_dim_size_to_factor": 128,   # factor when the two largest dims are this long
        "eps": 1e-30,                    # added to squared gradients (epsilon1)
        "clipping_threshold": 1.0,       # update clipping: block RMS at most this
        "multiply_by_parameter_scale": True,   # steps relative to each parameter's RMS
        "param_scale_floor": 1e-3,       # RMS used for near-zero parameters (epsilon2)
    },
}


def constants(optimizer: str) -> dict[str, Any]:
  """A copy of the fixed constants of `optimizer` (for stage keys)."""
  if optimizer not in CONSTANTS:
    raise ValueError(f"optimizer {optimizer!r} is not one of {OPTIMIZERS}")
  return dict(CONSTANTS[optimizer])


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------


def _adamw(learning_rate, weight_decay: float) -> optax.GradientTransformation:
  c = CONSTANTS["adamw"]
  return optax.chain(
      optax.clip_by_global_norm(c["clip_global_norm"]),
      optax.adamw(learning_rate, b1=c["b1"], b2=c["b2"], eps=c["eps"],
                  weight_decay=weight_decay))


def _adafactor(learning_rate, weight_decay: float) -> optax.GradientTransformation:
  """optax.adafactor's chain, spelt out so that every constant is in CONSTANTS."""
  c = CONSTANTS["adafactor"]
  parts = [
      optax.scale_by_factored_rms(decay_rate=c["decay_rate"], epsilon=c["eps"],
                                  min_dim_size_to_factor=c["min_dim_size_to_factor"]),
      optax.clip_by_block_rms(c["clipping_threshold"]),
      optax.scale_by_learning_rate(learning_rate, flip_sign=False),
  ]
  if c["multiply_by_parameter_scale"]:
    parts.append(optax.scale_by_param_block_rms(c["param_scale_floor"]))
  if weight_decay:
    # As in optax and T5X: applied after the learning rate, so not scaled by it.
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.scale(-1.0))
  return optax.chain(*parts)


_FACTORIES = {"adamw": _adamw, "adafactor": _adafactor}


def make_optimizer(step_cfg) -> optax.GradientTransformation:
  """The optimizer of `step_cfg` (fields `optimizer`, `weight_decay`), with its learning
  rate injected as a hyperparameter: 0 until `with_learning_rate` sets it."""
  if step_cfg.optimizer not in _FACTORIES:
    raise ValueError(f"optimizer {step_cfg.optimizer!r} is not one of {OPTIMIZERS}")
  factory = _FACTORIES[step_cfg.optimizer]
  weight_decay = float(step_cfg.weight_decay)

  def with_injected_rate(learning_rate):
    return factory(learning_rate, weight_decay)

  # float32 hyperparameters: with bfloat16 parameters the rate would otherwise be
  # rounded to bfloat16 every step.
  inner = optax.inject_hyperparams(with_injected_rate, hyperparam_dtype=jnp.float32)(
      learning_rate=0.0)
  return _naming_factored_moments(inner)


def with_learning_rate(opt_state, learning_rate) -> Any:
  """`opt_state` (from `make_optimizer`) with its learning rate replaced; call inside
  the jitted step with the host's `learning_rate_at` value."""
  rate = jnp.asarray(learning_rate, jnp.float32)
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": rate})


def current_learning_rate(opt_state) -> Any:
  return opt_state.hyperparams["learning_rate"]


# ---------------------------------------------------------------------------
# Sharding names of the optimizer state
# ---------------------------------------------------------------------------


def _naming_factored_moments(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` whose states (from init and from every update) carry correct names; optax
  itself maps the moments against the gradient tree, so it gets them back under
  their parameters' names (a change of metadata only: no computation)."""

  def init(params):
    return name_factored_moments(tx.init(params), params)

  def update(updates, state, params=None):
    updates, state = tx.update(updates, _moments_named_as_parameters(state, params), params)
    return updates, name_factored_moments(state, params)

  return optax.GradientTransformation(init, update)


def factored_axes(shape: tuple[int, ...]) -> tuple[int, int] | None:
  """(second largest, largest) axis that Adafactor factors a moment of this shape
  over, or None when it keeps the full moment; the rule of optax's
  `scale_by_factored_rms` at CONSTANTS' `min_dim_size_to_factor`."""
  if len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < CONSTANTS["adafactor"]["min_dim_size_to_factor"]:
    return None
  return int(order[-2]), int(order[-1])


def name_factored_moments(opt_state, params):
  """`opt_state` with every Adafactor moment named after the dimensions it keeps.

  optax builds the moments by mapping over the parameter tree, so each inherits
  its parameter's logical names, which do not fit a moment of another rank: the row
  moment drops the parameter's largest axis, the column moment its second largest,
  and the unused moment of each pair is a (1,) placeholder. They get the names of
  the axes they keep (so they shard like their parameter) and the placeholders get
  none (replicated). Other optimizer states are returned unchanged.
  """
  return _map_factored_moments(_renamed, opt_state, params)


def _moments_named_as_parameters(opt_state, params):
  def inherit(moment, param, kind):
    if not isinstance(moment, nnx.Variable) or not isinstance(param, nnx.Variable):
      return moment
    return type(moment)(moment.get_value(), **param.get_metadata())
  return _map_factored_moments(inherit, opt_state, params)


def _map_factored_moments(fn, opt_state, params):
  """Applies fn(moment, param, kind) to each moment of each Adafactor state."""
  def each(moments, kind):
    return jax.tree.map(lambda m, p: fn(m, p, kind), moments, params,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))

  def visit(node):
    if not isinstance(node, optax.FactoredState):
      return node
    return node._replace(v_row=each(node.v_row, "row"), v_col=each(node.v_col, "col"),
                         v=each(node.v, "full"))

  return jax.tree.map(visit, opt_state, is_leaf=lambda x: isinstance(x, optax.FactoredState))


def _renamed(moment, param, kind: str):
  """`moment` (row, col or full, of `param`) with the logical names of the axes it keeps."""
  if not isinstance(moment, nnx.Variable) or not isinstance(param, nnx.Variable):
    return moment
  names = param.get_metadata().get("out_sharding")
  if names is None:
    return moment
  axes = factored_axes(tuple(param.shape))
  kept = _kept_axes(len(param.shape), axes, kind)
  if kept is None:   # the (1,) placeholder of a moment this parameter does not use
    new_names, expected = (None,), (1,)
  else:
    new_names = tuple(names[a] for a in kept)
    expected = tuple(param.shape[a] for a in kept)
  if tuple(moment.shape) != expected:
    raise ValueError(
        f"Adafactor {kind} moment of shape {tuple(moment.shape)} for a parameter of shape "
        f"{tuple(param.shape)}: expected {expected}; optax's factoring rule differs "
        "from scaling.optim.factored_axes")
  metadata = {**moment.get_metadata(), "out_sharding": new_names}
  return type(moment)(moment.get_value(), **metadata)


def _kept_axes(rank: int, axes: tuple[int, int] | None, kind: str) -> tuple[int, ...] | None:
  """Axes of the parameter that a moment keeps; None for an unused placeholder."""
  if kind == "full":
    return tuple(range(rank)) if axes is None else None
  if axes is None:
    return None
  second, largest = axes
  dropped = largest if kind == "row" else second
  return tuple(a for a in range(rank) if a != dropped)


# ---------------------------------------------------------------------------
# Learning-rate schedules (host functions)
# ---------------------------------------------------------------------------


def _warmup_factor(step_cfg, step: int) -> float:
  """Linear ramp to 1 over `warmup_steps` updates; the first update gets 1/warmup."""
  if step_cfg.warmup_steps <= 0:
    return 1.0
  return min((step + 1) / step_cfg.warmup_steps, 1.0)


def wsd_branch_step(step_cfg, total_steps: int) -> int:
  """The step where a WSD run of `total_steps` leaves the stable phase: a branch for
  this budget restarts from the stable run's checkpoint at this step and cools down."""
  _check_total(total_steps)
  return int(round(total_steps * (1.0 - step_cfg.cooldown_fraction)))


def _cooldown_factor(shape: str, progress: float) -> float:
  """From 1 at the start of the cooldown (progress 0) to 0 at its end (progress 1)."""
  progress = min(max(progress, 0.0), 1.0)
  if shape == "linear":
    return 1.0 - progress
  if shape == "1-sqrt":
    return 1.0 - math.sqrt(progress)
  raise ValueError(f"cooldown_shape {shape!r} is not one of {COOLDOWN_SHAPES}")


def _rsqrt(step_cfg, step: int, total_steps: int) -> float:
  warmup = max(step_cfg.warmup_steps, 1)
  return _warmup_factor(step_cfg, step) * math.sqrt(warmup / max(step + 1, warmup))


def _constant(step_cfg, step: int, total_steps: int) -> float:
  return _warmup_factor(step_cfg, step)


def _cosine(step_cfg, step: int, total_steps: int) -> float:
  _check_total(total_steps)
  warmup = max(step_cfg.warmup_steps, 0)
  if step < warmup:
    return _warmup_factor(step_cfg, step)
  progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
  final = step_cfg.final_lr_fraction
  return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _wsd(step_cfg, step: int, total_steps: int) -> float:
  branch = wsd_branch_step(step_cfg, total_steps)
  if step < branch:
    return _warmup_factor(step_cfg, step)
  progress = (step - branch) / max(total_steps - branch, 1)
  return _warmup_factor(step_cfg, branch) * _cooldown_factor(step_cfg.cooldown_shape, progress)


_SCHEDULES = {"rsqrt": _rsqrt, "constant": _constant, "cosine": _cosine, "wsd": _wsd}


def learning_rate_at(step_cfg, step: int, total_steps: int) -> float:
  """The learning rate of the update taken at `step` (0 for the first update) of a run
  of `total_steps` updates; `total_steps` matters to 'cosine' and 'wsd' only.

  rsqrt:    peak * sqrt(warmup / max(step + 1, warmup)) after a linear warm-up (T5)
  constant: peak after a linear warm-up
  cosine:   warm-up, then cosine from peak to final_lr_fraction * peak at total_steps
  wsd:      warm-up, peak until wsd_branch_step, then cooldown_shape to 0 at total_steps
  """
  if step_cfg.schedule not in _SCHEDULES:
    raise ValueError(f"schedule {step_cfg.schedule!r} is not one of {SCHEDULES}")
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}")
  return float(step_cfg.learning_rate) * _SCHEDULES[step_cfg.schedule](step_cfg, step, total_steps)


def _check_total(total_steps: int) -> None:
  if not isinstance(total_steps, (int, np.integer)) or total_steps <= 0:
    raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")


# ---------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------


def ends_at_zero(section) -> bool:
  """Whether the schedule of `section` anneals the learning rate to exactly 0."""
  return section.schedule == "wsd" or (
      section.schedule == "cosine" and float(section.final_lr_fraction) == 0.0)


def check(section_name: str, section) -> None:
  """Raises scaling.config.ConfigError naming the first field of a training section
  (`pretrain`, `finetune`) that the optimizer or the schedule cannot take."""
  from scaling.config import ConfigError

  def field(name):
    return f"{section_name}.{name}"

  if section.optimizer not in OPTIMIZERS:
    raise ConfigError(f"{field('optimizer')} must be one of {OPTIMIZERS}, got {section.optimizer!r}")
  if section.schedule not in SCHEDULES:
    raise ConfigError(f"{field('schedule')} must be one of {SCHEDULES}, got {section.schedule!r}")
  _check_number(ConfigError, field("cooldown_fraction"), section.cooldown_fraction,
                lambda v: 0.0 < v < 1.0, "in (0, 1)")
  if section.cooldown_shape not in COOLDOWN_SHAPES:
    raise ConfigError(f"{field('cooldown_shape')} must be one of {COOLDOWN_SHAPES}, "
                      f"got {section.cooldown_shape!r}")
  _check_number(ConfigError, field("final_lr_fraction"), section.final_lr_fraction,
                lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  _check_number(ConfigError, field("weight_decay"), section.weight_decay,
                lambda v: v >= 0.0, ">= 0")
  if not isinstance(section.warmup_steps, int) or section.warmup_steps < 0:
    raise ConfigError(f"{field('warmup_steps')} must be an int >= 0, got {section.warmup_steps!r}")
  # Adafactor (optax, and T5X by default) subtracts weight_decay * parameter after
  # the learning-rate scaling, so its decay does not shrink with the learning rate.
  # Under a schedule that anneals to 0 the last updates would then only shrink the
  # weights, with no gradient step left to balance it, and the final checkpoint (the
  # one a WSD branch or a cosine run is evaluated at) is the most damaged. AdamW's
  # decay is scaled by the learning rate, so it takes every schedule.
  if section.optimizer == "adafactor" and section.weight_decay > 0 and ends_at_zero(section):
    raise ConfigError(
        f"{field('schedule')}={section.schedule!r} anneals the learning rate to 0, which "
        f"Adafactor cannot take with {field('weight_decay')}={section.weight_decay}: its "
        "decay is not scaled by the learning rate, so the cooldown would only shrink the "
        "weights. Use weight_decay=0, adamw, or a schedule that does not end at 0 "
        "('rsqrt', 'constant', or 'cosine' with final_lr_fraction > 0)")


def _check_number(error, name: str, value, ok, wanted: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(float(value)):
    raise error(f"{name} must be a number {wanted}, got {value!r}")
