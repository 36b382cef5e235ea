"""Train states, the jitted train step, the training loop and evaluation.

The NNX model is split once into a static graph and pytrees of state; the step is a
pure function of (state, batch) under `jax.jit` with explicit shardings and donated
state, so the state keeps its layout step after step. Trainers are cached by what
determines their compiled code, so the many short runs of a study compile once.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax import struct

from models import accounting
from models import decoding
from models import build_model as build_module
from models import sizes as sizes_lib
from scaling import logs
from scaling import mesh as mesh_lib
from scaling import optim
from scaling import timing

Batch = dict[str, np.ndarray]
# Batch features by objective: encoder-decoder and prefix-LM batches carry encoder
# inputs; a causal-LM batch carries the decoder features alone.
_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
             "decoder_loss_weights")


@struct.dataclass
class ModelState:
  """What a model is: its parameters and its non-parameter state (e.g. RNG counts)."""
  params: Any
  rest: Any


@struct.dataclass
class TrainState:
  """A model in training: the model, the optimizer's moments and the step count."""
  model: ModelState
  opt_state: Any
  step: jax.Array

  @property
  def optimizer(self) -> dict:
    """The part of the state a finetune does not need (checkpointed as its own item)."""
    return dict(opt_state=self.opt_state, step=self.step)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The fields of a training section that the optimizer and its schedule read."""
  optimizer: str
  learning_rate: float
  warmup_steps: int
  schedule: str
  weight_decay: float
  cooldown_fraction: float = 0.2
  cooldown_shape: str = "linear"
  final_lr_fraction: float = 0.0

  @classmethod
  def from_section(cls, section) -> "StepConfig":
    return cls(section.optimizer, float(section.learning_rate), int(section.warmup_steps),
               section.schedule, float(section.weight_decay), float(section.cooldown_fraction),
               section.cooldown_shape, float(section.final_lr_fraction))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  size: sizes_lib.ModelSize
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"   # rematerialisation policy of each block (models.layers.REMAT_POLICIES)


def cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array,
                  weights_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed token cross-entropy in float32 and the summed weights."""
  logits = logits_BTV.astype(jnp.float32)
  nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits, targets_BT)
  weights = weights_BT.astype(jnp.float32)
  return jnp.sum(nll_BT * weights), jnp.sum(weights)


def forward(model: nnx.Module, batch: Batch, *, dropout_key: jax.Array | None = None) -> jax.Array:
  """Teacher-forced logits at the decoder target positions; dropout is on exactly
  when a key is given.

  A decoder-only model reads a translation batch as a prefix LM, laid out as its
  decoding is: [source padded to S | decoder inputs], logits from position S on.
  """
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  kw = dict(deterministic=dropout_key is None, rngs=rngs)
  decoder_in_BT = batch["decoder_input_tokens"]
  if model.size.kind == sizes_lib.ENCODER_DECODER:
    return model(batch["encoder_input_tokens"], decoder_in_BT,
                 encoder_segment_ids_BS=batch.get("encoder_segment_ids"),
                 decoder_segment_ids_BT=batch.get("decoder_segment_ids"), **kw)
  if "encoder_input_tokens" not in batch:  # causal LM
    return model(decoder_in_BT, segment_ids_BT=batch.get("decoder_segment_ids"), **kw)
  if "decoder_segment_ids" in batch:
    raise ValueError("a decoder-only model reads translation as a prefix LM, one "
                     "example per row: packed translation batches are not supported")
  source_BS = batch["encoder_input_tokens"]
  B, S = source_BS.shape
  tokens_BL = jnp.concatenate([source_BS, decoder_in_BT], axis=1)
  logits_BLV = model(tokens_BL, prefix_lengths_B=jnp.full((B,), S, jnp.int32), **kw)
  return logits_BLV[:, S:]


def build_model(model_cfg: ModelConfig, seed: int) -> nnx.Module:
  return build_module(model_cfg.size, dtype=_DTYPES[model_cfg.dtype],
                      param_dtype=_DTYPES[model_cfg.param_dtype], remat=model_cfg.remat,
                      rngs=nnx.Rngs(seed))


class Trainer:
  """Everything compiled for one (model, optimizer, mesh): init, step, eval, decode."""

  def __init__(self, model_cfg: ModelConfig, step_cfg: StepConfig, mesh: jax.sharding.Mesh,
               seed: int = 0):
    self.model_cfg, self.step_cfg, self.mesh, self.seed = model_cfg, step_cfg, mesh, seed
    self.optimizer = optim.make_optimizer(step_cfg)
    with mesh_lib.activate(mesh):
      abstract = nnx.eval_shape(lambda: build_model(model_cfg, 0))
      self.graphdef, abs_params, abs_rest = nnx.split(abstract, nnx.Param, ...)
      abs_opt = jax.eval_shape(self.optimizer.init, abs_params)
      abstract_state = TrainState(ModelState(abs_params, abs_rest), abs_opt,
                                  jax.ShapeDtypeStruct((), jnp.int32))
      self.state_sharding = nnx.get_named_sharding(abstract_state, mesh)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state, self.state_sharding)
    self.batch_sharding = mesh_lib.batch_sharding(mesh)
    self.replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self.model_state_sharding = self.state_sharding.model
    self.abstract_model_state = self.abstract_state.model
    self._init = jax.jit(self._init_fn, static_argnums=0, out_shardings=self.state_sharding,
                         compiler_options=_run_once_options(mesh))
    self._start_from = jax.jit(self._start_from_fn, in_shardings=(self.model_state_sharding,),
                               out_shardings=self.state_sharding)
    self._step = jax.jit(self._step_fn,
                         in_shardings=(self.state_sharding, self.batch_sharding, None),
                         out_shardings=(self.state_sharding, self.replicated),
                         donate_argnums=0)
    # Results every host reads back (metrics, sums, decoded tokens) are replicated.
    self._nll = jax.jit(self._nll_fn, in_shardings=(self.model_state_sharding, self.batch_sharding),
                        out_shardings=self.replicated)
    self._decode = jax.jit(self._decode_fn, static_argnums=2, out_shardings=self.replicated)
    self._all_finite = jax.jit(_all_finite, out_shardings=self.replicated)

  # -- pure functions (jitted above) --
  def _init_fn(self, seed: int) -> TrainState:
    _, params, rest = nnx.split(build_model(self.model_cfg, seed), nnx.Param, ...)
    return self._start_from_fn(ModelState(params, rest))

  def _start_from_fn(self, model_state: ModelState) -> TrainState:
    return TrainState(model_state, self.optimizer.init(model_state.params),
                      jnp.zeros((), jnp.int32))

  def _merge(self, params, rest) -> nnx.Module:
    return nnx.merge(self.graphdef, params, rest)

  def _step_fn(self, state: TrainState, batch: Batch, learning_rate: jax.Array):
    def loss_fn(params):
      model = self._merge(params, state.model.rest)
      key = jax.random.fold_in(jax.random.key(self.seed), state.step)
      nll, n = cross_entropy(forward(model, batch, dropout_key=key),
                             batch["decoder_target_tokens"], batch["decoder_loss_weights"])
      return nll / jnp.maximum(n, 1.0), nnx.state(model, nnx.Not(nnx.Param))
    params = state.model.params
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    opt_state = optim.with_learning_rate(state.opt_state, learning_rate)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    new_state = TrainState(ModelState(optax.apply_updates(params, updates), rest), opt_state,
                           state.step + 1)
    return new_state, dict(loss=loss, grad_norm=optax.global_norm(grads),
                           learning_rate=learning_rate)

  def _nll_fn(self, model_state: ModelState, batch: Batch):
    model = self._merge(model_state.params, model_state.rest)
    return cross_entropy(forward(model, batch),
                         batch["decoder_target_tokens"], batch["decoder_loss_weights"])

  def _decode_fn(self, model_state: ModelState, encoder_input_tokens_BS, max_length: int):
    model = self._merge(model_state.params, model_state.rest)
    return decoding.greedy_decode(model, encoder_input_tokens_BS, max_length=max_length)

  # -- public API --
  def init(self, seed: int) -> TrainState:
    with mesh_lib.activate(self.mesh):
      return self._init(seed)

  def start_from(self, model_state: ModelState) -> TrainState:
    """A train state at step 0 with fresh optimizer moments around given weights."""
    with mesh_lib.activate(self.mesh):
      return self._start_from(model_state)

  def step(self, state: TrainState, local_batch: Batch,
           learning_rate: float) -> tuple[TrainState, dict]:
    """One update at `learning_rate` (set by the host: schedules never recompile) on
    the global batch whose rows on this process's devices are `local_batch`."""
    with mesh_lib.activate(self.mesh):
      return self._step(state, self._put_local(local_batch), np.float32(learning_rate))

  def lower_step(self, batch: Batch) -> jax.stages.Lowered:
    """The train step lowered for global batches shaped like `batch` (arrays or
    ShapeDtypeStructs), without running it: `.compile().memory_analysis()` gives what
    each device holds, with nothing allocated."""
    abstract_batch = {k: jax.ShapeDtypeStruct(np.shape(v), jax.dtypes.canonicalize_dtype(v.dtype),
                                              sharding=self.batch_sharding)
                      for k, v in batch.items() if k in _FEATURES}
    learning_rate = jax.ShapeDtypeStruct((), jnp.float32)
    with mesh_lib.activate(self.mesh):
      return self._step.lower(self.abstract_state, abstract_batch, learning_rate)

  def params_finite(self, state: TrainState) -> bool:
    """Whether every parameter is finite: one pass over the parameters, taken before a
    state is saved, never on every step."""
    with mesh_lib.activate(self.mesh):
      return bool(self._all_finite(state.model.params))

  def local_input_shards(self, batch_size: int, num_shards: int) -> list[int]:
    """The input shards (equal row blocks of the global batch) this process reads."""
    return mesh_lib.local_row_blocks(self.batch_sharding, batch_size, num_shards)

  def nll(self, model_state, batch: Batch) -> tuple[float, float]:
    """Summed cross-entropy and target-token count of `model_state` on `batch`."""
    with mesh_lib.activate(self.mesh):
      total, n = self._nll(model_state, self._put(batch))
    return float(total), float(n)

  def decode(self, model_state, encoder_input_tokens_BS: np.ndarray, max_length: int) -> np.ndarray:
    """Greedy translations (token ids, 0 after EOS) of a batch of encoder inputs."""
    with mesh_lib.activate(self.mesh):
      tokens = _global_array(np.asarray(encoder_input_tokens_BS), self.replicated)
      return np.asarray(self._decode(model_state, tokens, max_length))

  def _put(self, batch: Batch) -> Batch:
    """A global batch every process holds in full (evaluation data) onto the mesh."""
    return {k: _global_array(np.asarray(batch[k]), self.batch_sharding)
            for k in _FEATURES if k in batch}

  def _put_local(self, local_batch: Batch) -> Batch:
    """This process's rows of a global batch onto the mesh; each process reads only its
    own input shards, so no host holds the whole global batch."""
    if jax.process_count() == 1:
      return self._put(local_batch)
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
            for k, v in local_batch.items() if k in _FEATURES}


class TrainerGroup:
  """`size` models of one shape trained together as one vmapped program: their states
  are stacked on a new leading axis (replicated along it, each member sharded as the
  trainer shards one model), and every update applies one shared batch at one shared
  learning rate to all of them. Each member's update is the trainer's own step, so a
  member trains as it would alone; what it buys is one program launch per step for all
  (finetunes of one pretraining run's checkpoints use a large accelerator, or a CPU's
  cores, far better together than one after the other)."""

  def __init__(self, trainer: Trainer, size: int):
    self.trainer, self.size, self.model_cfg = trainer, size, trainer.model_cfg
    state_sharding = jax.tree.map(_stacked, trainer.state_sharding)
    self._start_from = jax.jit(
        lambda states: jax.vmap(trainer._start_from_fn)(_stack(states)),
        out_shardings=state_sharding)
    self._step = jax.jit(jax.vmap(trainer._step_fn, in_axes=(0, None, None)),
                         in_shardings=(state_sharding, trainer.batch_sharding, None),
                         out_shardings=(state_sharding, trainer.replicated),
                         donate_argnums=0)
    self._member = jax.jit(lambda state, i: jax.tree.map(lambda x: x[i], state.model),
                           out_shardings=trainer.model_state_sharding)
    self._all_finite = jax.jit(jax.vmap(_all_finite), out_shardings=trainer.replicated)

  def start_from(self, model_states: list[ModelState]) -> TrainState:
    """The stacked train state at step 0 around each member's weights."""
    if len(model_states) != self.size:
      raise ValueError(f"{len(model_states)} model states for a group of {self.size}")
    with mesh_lib.activate(self.trainer.mesh):
      return self._start_from(list(model_states))

  def step(self, state: TrainState, local_batch: Batch,
           learning_rate: float) -> tuple[TrainState, dict]:
    """One update of every member on the same batch; metrics have a leading member axis."""
    with mesh_lib.activate(self.trainer.mesh):
      return self._step(state, self.trainer._put_local(local_batch), np.float32(learning_rate))

  def member(self, state: TrainState, i: int) -> ModelState:
    """Member `i`'s model state, laid out as the trainer lays out one model."""
    with mesh_lib.activate(self.trainer.mesh):
      return self._member(state, np.int32(i))

  def members_finite(self, state: TrainState) -> np.ndarray:
    """Whether each member's parameters are all finite."""
    with mesh_lib.activate(self.trainer.mesh):
      return np.asarray(self._all_finite(state.model.params))


def _stacked(sharding: jax.sharding.NamedSharding) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(None, *sharding.spec))


def _stack(trees: list):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _run_once_options(mesh: jax.sharding.Mesh) -> dict | None:
  """XLA options for a program run once per run (init). On CPU, LLVM's optimisation of
  its random-number fusions takes longer than the program runs (tiny: 7 s to compile
  at the default level, 3.7 s unoptimised, milliseconds to run)."""
  if mesh.devices.flat[0].platform == "cpu":
    return {"xla_backend_optimization_level": 0}
  return None


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _global_array(value: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  if jax.process_count() == 1:
    return jax.device_put(value, sharding)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


@functools.lru_cache(maxsize=16)
def get_trainer(model_cfg: ModelConfig, step_cfg: StepConfig, mesh: jax.sharding.Mesh,
                seed: int = 0) -> Trainer:
  return Trainer(model_cfg, step_cfg, mesh, seed)


@functools.lru_cache(maxsize=16)
def get_trainer_group(trainer: Trainer, size: int) -> TrainerGroup:
  """One compiled group per (trainer, size): a grid's groups of one size share it."""
  return TrainerGroup(trainer, size)


@functools.lru_cache(maxsize=1)
def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """This machine's float32 matmul throughput (FLOP/s), the denominator of MFU."""
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best


def batch_tokens(batch: Batch) -> int:
  """Tokens a batch carries: non-padding encoder inputs plus decoder targets."""
  source = batch.get("encoder_input_tokens")
  source_tokens = 0 if source is None else np.count_nonzero(source)
  return int(source_tokens + np.count_nonzero(batch["decoder_target_tokens"]))


def global_batch_tokens(local_batch: Batch) -> int:
  """Tokens of the global batch whose rows here are `local_batch`. Every process reads
  only its rows, so the counts are summed over processes: a host-side collective
  each step (packed batches, with a fixed token count per step, will not need it)."""
  tokens = batch_tokens(local_batch)
  if jax.process_count() == 1:
    return tokens
  from jax.experimental import multihost_utils
  return int(np.sum(multihost_utils.process_allgather(np.int32(tokens))))


def batch_flops(size: sizes_lib.ModelSize, local_batch: Batch) -> float:
  """Training FLOPs of one step on the global batch (every process holds as many rows
  as this one), at its padded lengths (compute spent)."""
  b, t = local_batch["decoder_target_tokens"].shape
  source = local_batch.get("encoder_input_tokens")
  s = 0 if source is None else source.shape[1]
  return b * jax.process_count() * accounting.train_flops_per_example(size, s, t)


@dataclasses.dataclass
class Counters:
  """Where a run stands: updates taken, tokens seen, FLOPs spent, seconds trained."""
  step: int = 0
  tokens: int = 0
  flops: float = 0.0
  wall_s: float = 0.0


class Diverged(RuntimeError):
  """The loss (or the gradient norm, or the parameters) became NaN or infinite: the run
  stops at update `step`, whose loss was `loss`."""

  def __init__(self, step: int, loss: float, what: str = "loss"):
    super().__init__(step, loss, what)  # pickled as its arguments (Ray executors)
    self.step, self.loss, self.what = step, loss, what

  def __str__(self) -> str:
    if self.what == "parameters":  # the loss of that update was still finite
      return f"parameters not finite after step {self.step}"
    return f"{self.what} not finite at step {self.step} (loss {self.loss})"


class DivergenceWatch:
  """Stops a run whose loss is NaN or infinite, without a device sync per step: the
  per-step losses and gradient norms stay on the device until `check_losses` fetches
  them all at once (when progress is recorded anyway). `check` also verifies the
  parameters, as the update after the last finite loss may already have broken them:
  it is what a state must pass before it is saved."""

  def __init__(self, trainer: Trainer):
    self.trainer = trainer
    self._pending: list[tuple[int, dict]] = []
    self._verified_step = -1

  def add(self, step: int, metrics: dict) -> None:
    self._pending.append((step, dict(loss=metrics["loss"], grad_norm=metrics["grad_norm"])))

  def check_losses(self) -> None:
    steps = [step for step, _ in self._pending]
    fetched = jax.device_get([values for _, values in self._pending])  # one sync for all
    self._pending = []
    for step, values in zip(steps, fetched):
      loss, grad_norm = float(values["loss"]), float(values["grad_norm"])
      if not np.isfinite(loss):
        raise Diverged(step, loss)
      if not np.isfinite(grad_norm):
        raise Diverged(step, loss, "gradient norm")

  def check(self, state: TrainState, step: int) -> None:
    if step == self._verified_step:
      return
    self.check_losses()
    if not self.trainer.params_finite(state):
      raise Diverged(step, float("nan"), "parameters")
    self._verified_step = step


class MemberWatch(DivergenceWatch):
  """A DivergenceWatch over a TrainerGroup's members: a member whose loss, gradient norm
  or parameters stop being finite is noted in `diverged` (member -> Diverged) and the
  others train on (vmapped members do not mix); `Diverged` is raised once all have."""

  def __init__(self, group: TrainerGroup):
    super().__init__(group)
    self.diverged: dict[int, Diverged] = {}

  def check_losses(self) -> None:
    steps = [step for step, _ in self._pending]
    fetched = jax.device_get([values for _, values in self._pending])
    self._pending = []
    for step, values in zip(steps, fetched):
      for i, (loss, grad_norm) in enumerate(zip(values["loss"], values["grad_norm"])):
        if i not in self.diverged and not np.isfinite(loss):
          self.diverged[i] = Diverged(step, float(loss))
        elif i not in self.diverged and not np.isfinite(grad_norm):
          self.diverged[i] = Diverged(step, float(loss), "gradient norm")
    self._raise_if_all_diverged()

  def check(self, state: TrainState, step: int) -> None:
    if step == self._verified_step:
      return
    self.check_losses()
    for i, finite in enumerate(self.trainer.members_finite(state)):
      if i not in self.diverged and not finite:
        self.diverged[i] = Diverged(step, float("nan"), "parameters")
    self._raise_if_all_diverged()
    self._verified_step = step

  def _raise_if_all_diverged(self) -> None:
    if len(self.diverged) == self.trainer.size:
      raise min(self.diverged.values(), key=lambda e: e.step)


def train(trainer: Trainer, state: TrainState, batches: Iterator[Batch], counters: Counters, *,
          until: Callable[[Counters], bool], learning_rate: Callable[[Counters], float],
          progress: logs.Progress, on_step: Callable[[TrainState, Counters], None] | None = None,
          save_due: Callable[[Counters], bool] | None = None,
          watch: DivergenceWatch | None = None) -> TrainState:
  """The one training loop: steps until `until(counters)`, each update at
  `learning_rate(counters)`; `on_step(state, counters)` follows every update (that is
  where checkpoints are taken). `counters` is updated in place; `progress` is closed
  when the loop ends.

  A NaN or infinite loss raises `Diverged`. Losses are checked whenever progress is
  recorded; the whole state (losses and parameters) when `save_due(counters)` says
  `on_step` will save and before the state is returned, so a diverged state is never
  checkpointed. `on_step` must save only when `save_due` holds. A TrainerGroup trains
  with a MemberWatch (`watch`), which raises only once every member has diverged."""
  size = trainer.model_cfg.size
  start = time.perf_counter() - counters.wall_s
  watch = watch or DivergenceWatch(trainer)
  with progress, timing.phase("train steps"):
    while not until(counters):
      with timing.phase("input"):
        batch = next(batches)
      state, metrics = trainer.step(state, batch, learning_rate(counters))
      n, f = global_batch_tokens(batch), batch_flops(size, batch)
      counters.step, counters.tokens, counters.flops = counters.step + 1, counters.tokens + n, counters.flops + f
      counters.wall_s = time.perf_counter() - start
      progress.update(counters, metrics, n, f)
      watch.add(counters.step, metrics)
      if save_due is not None and save_due(counters):
        watch.check(state, counters.step)
      elif progress.due(counters.step):
        watch.check_losses()
      if on_step is not None:
        on_step(state, counters)
    watch.check(state, counters.step)  # the caller may save what is returned
  return state
