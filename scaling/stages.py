"""What each stage of a study does: train, cool down, finetune, evaluate.

Each stage reads its inputs from the workdir, writes its outputs there, and knows
whether it is complete, so the runner can skip it on a re-run.

    <workdir>/pretrain/<key>/    orbax checkpoints of a training run, one per save point
                                 (the D_p budgets, or WSD's branch points), in tokens
    <workdir>/pretrain/<key>/periodic/  the run's last two periodic checkpoints, by step
                                 (removed once every save point is saved)
    <workdir>/cooldown/<key>/    a WSD decay branch's checkpoint at its budget D_p
    <workdir>/finetune/<key>/    orbax checkpoint of the finetuned model
    <workdir>/results/<key>.json one row per evaluation
    <workdir>/logs/<kind>/<key>/ TensorBoard and JSONL records of a training stage
                                 (kind: pretrain, cooldown or finetune; see scaling.logs)
"""
from __future__ import annotations

import dataclasses
import json
import math

import jax
import ml_collections
from etils import epath

from models import accounting
from scaling import checkpoint
from scaling import config as config_lib
from scaling import evaluate
from scaling import grid
from scaling import inputs
from scaling import logs
from scaling import mesh as mesh_lib
from scaling import optim
from scaling import preemption
from scaling import results
from scaling import timing
from scaling import train


@dataclasses.dataclass
class Context:
  """What every stage of one study shares."""
  cfg: ml_collections.ConfigDict
  workdir: epath.Path
  data: inputs.StudyInputs
  mesh: jax.sharding.Mesh
  peak_flops: float | None = None

  def trainer(self, stage: grid.Train, section: str) -> train.Trainer:
    size = dataclasses.replace(stage.size, vocab_size=self.data.model_vocab_size,
                               dropout_rate=float(self.cfg.model.dropout_rate))
    model_cfg = train.ModelConfig(size, self.cfg.model.dtype, self.cfg.model.param_dtype,
                                  self.cfg.model.remat)
    return train.get_trainer(model_cfg, train.StepConfig.from_section(self.cfg[section]),
                             self.mesh, int(self.cfg.seed))

  def input_shards(self, trainer: train.Trainer, section: str) -> inputs.InputShards:
    count = config_lib.input_shard_count(self.cfg)
    batch_size = int(self.cfg[section].batch_size)
    return inputs.InputShards(tuple(trainer.local_input_shards(batch_size, count)), count)

  def progress(self, stage, label: str, section: str, *, total_steps: int | None = None,
               total_tokens: int | None = None) -> logs.Progress:
    """Process 0 shows a stage's progress and writes its logs; every process computes
    the same numbers."""
    primary = mesh_lib.is_primary()
    return logs.Progress(label, self.cfg[section].log_every,
                         folder=log_dir(self.workdir, stage) if primary else None,
                         total_steps=total_steps, total_tokens=total_tokens,
                         peak_flops=self.peak_flops, show=primary)


_FOLDERS = {grid.Train: "pretrain", grid.Cooldown: "cooldown", grid.Finetune: "finetune"}


def stage_dir(workdir: epath.Path, stage) -> epath.Path:
  return workdir / _FOLDERS[type(stage)] / stage.key


def log_dir(workdir: epath.Path, stage) -> epath.Path:
  return workdir / "logs" / _FOLDERS[type(stage)] / stage.key


def _weights_checkpoint(workdir: epath.Path, weights: grid.Weights) -> tuple[epath.Path, int]:
  """The folder and step of the checkpoint holding `weights`."""
  folder = stage_dir(workdir, weights.stage)
  if isinstance(weights.stage, grid.Finetune):
    return folder, checkpoint.steps(folder)[-1]
  return folder, weights.D_p


# ---------------------------------------------------------------- train

def save_points(cfg: ml_collections.ConfigDict, stage: grid.Train) -> list[int]:
  """Token counts at which the run saves: each budget D_p, or under WSD each budget's
  branch point, where its cooldown leaves the stable phase (Hägele et al. 2024)."""
  return sorted({save_point(cfg, d_p) for d_p in stage.D_p})


def save_point(cfg: ml_collections.ConfigDict, d_p: int) -> int:
  """The save point that serves budget `d_p`: itself, or under WSD its branch point."""
  if cfg.pretrain.schedule != "wsd":
    return d_p
  return max(1, round((1.0 - float(cfg.pretrain.cooldown_fraction)) * d_p))


def train_missing(cfg: ml_collections.ConfigDict, workdir: epath.Path,
                  stage: grid.Train, up_to: int | None = None) -> list[int]:
  """The save points not saved yet (those up to `up_to` tokens, when given)."""
  saved = set(checkpoint.steps(stage_dir(workdir, stage)))
  return [point for point in save_points(cfg, stage)
          if point not in saved and (up_to is None or point <= up_to)]


def run_train(ctx: Context, stage: grid.Train, label: str, stop_at: int | None = None) -> None:
  """One run per (size, shape, data); saves a checkpoint when the tokens seen reach
  each save point, and periodic ones (`periodic/`, the last two kept) as configured
  and when preempted. A re-run resumes from the latest readable of: the last save
  point before the first missing one, or a periodic checkpoint before that point;
  it replays the deterministic data stream up to there.

  With `stop_at` (a save point), the run stops once the save points up to it are saved;
  a later call goes on from there exactly as one uninterrupted run would (the schedule's
  horizon is the largest D_p either way), so finetunes can start from an early save
  point while the run continues (the Ray executor's segments)."""
  trainer = ctx.trainer(stage, "pretrain")
  folder = stage_dir(ctx.workdir, stage)
  section = ctx.cfg.pretrain
  with preemption.deferred():
    state, counters = _resume(ctx, stage, trainer, label)
    # after _resume: it may set some aside
    points = train_missing(ctx.cfg, ctx.workdir, stage, up_to=stop_at)
    with timing.phase("input"):
      batches = ctx.data.train_batches(stage.data, ctx.cfg.seed,
                                       ctx.input_shards(trainer, "pretrain"),
                                       budget_tokens=max(points) if points else None)
      inputs.skip(batches, counters.step)
    every = checkpoint.Every(int(section.checkpoint_every_steps),
                             float(section.checkpoint_every_minutes))
    horizon = max(stage.D_p)
    with batches, _TrainSaves(folder, points, every, label) as saves:
      train.train(trainer, state, batches, counters, until=lambda c: not points,
                  learning_rate=lambda c: _learning_rate(section, c, horizon),
                  progress=ctx.progress(stage, label, "pretrain", total_tokens=max(points)),
                  on_step=saves.on_step, save_due=saves.due)
    # the newest save point is newer than every periodic checkpoint: they are of no more use
    checkpoint.delete_all(periodic_dir(folder))


def periodic_dir(folder: epath.Path) -> epath.Path:
  """A training run's periodic checkpoints, indexed by step (the save points' folder
  is indexed by tokens, so it stays "step = D_p")."""
  return folder / "periodic"


class _TrainSaves:
  """What a training run saves after a step, in the background: a checkpoint at each
  save point it reaches (kept for finetunes), a periodic one when due, and one when
  preempted, after which the process exits."""

  def __init__(self, folder: epath.Path, points: list[int], every: checkpoint.Every,
               label: str):
    self.points, self.every, self.label = points, every, label
    self.budgets = checkpoint.Writer(folder)
    # only ever read by a resumed process: not kept in memory
    self.periodic = checkpoint.Writer(periodic_dir(folder), keep=2, remember=False)
    self._decided = (-1, False, False)

  def due(self, counters: train.Counters) -> bool:
    """Whether `on_step` saves after this step (the loop checks the state first)."""
    periodic, preempted = self._decide(counters.step)
    return self._point_reached(counters) or periodic or preempted

  def on_step(self, state: train.TrainState, counters: train.Counters) -> None:
    items = dict(model=state.model, optimizer=state.optimizer)
    meta = dataclasses.asdict(counters)
    at_point = self._point_reached(counters)
    while self._point_reached(counters):
      point = self.points.pop(0)
      self.budgets.save(point, items, meta)
      print(f"{self.label}  checkpoint at {point:,} tokens ({counters.tokens:,} seen)", flush=True)
    periodic, preempted = self._decide(counters.step)
    if (periodic or preempted) and not at_point:  # a save point serves as well
      if self.periodic.save(counters.step, items, meta):
        print(f"{self.label}  periodic checkpoint at step {counters.step:,} "
              f"({counters.tokens:,} tokens)", flush=True)
    if at_point or periodic or preempted:
      self.every.saved()
    if preempted:
      self.close()  # the files complete before the process exits
      print(f"{self.label}  preempted: saved at step {counters.step:,}; exiting with code "
            f"{preemption.EXIT_CODE}, run the same command again to resume", flush=True)
      raise preemption.Preempted(f"{self.label} step {counters.step}")

  def _point_reached(self, counters: train.Counters) -> bool:
    return bool(self.points) and counters.tokens >= self.points[0]

  def _decide(self, step: int) -> tuple[bool, bool]:
    """Decided once per step: the clock and the preemption sync point are asked once."""
    if self._decided[0] != step:
      self._decided = (step, self.every.due(step), preemption.reached(step))
    return self._decided[1:]

  def close(self) -> None:
    self.budgets.close()
    self.periodic.close()

  def __enter__(self) -> "_TrainSaves":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


@dataclasses.dataclass(frozen=True)
class _Saved:
  """A checkpoint a training run can resume from."""
  kind: str         # "save point" or "periodic"
  folder: epath.Path
  step: int
  tokens: int


def _resume(ctx: Context, stage: grid.Train, trainer: train.Trainer, label: str):
  """The state of the newest readable checkpoint before the first missing save point
  (an unreadable one is set aside with a warning), or a fresh state."""
  folder = stage_dir(ctx.workdir, stage)
  first_missing = train_missing(ctx.cfg, ctx.workdir, stage)[0]
  for saved in _resume_candidates(folder, first_missing, label):
    try:
      state, counters = _restore_state(trainer, saved.folder, saved.step, label)
    except checkpoint.Unreadable:
      continue
    print(f"{label}  resuming from the {saved.kind} checkpoint at step {counters.step:,} "
          f"({counters.tokens:,} tokens)", flush=True)
    return state, counters
  return trainer.init(ctx.cfg.seed), train.Counters()


def _resume_candidates(folder: epath.Path, first_missing: int, label: str) -> list[_Saved]:
  """Newest first. A save point's tokens are its budget (it was taken at the first
  step past it); a periodic checkpoint's are read from its metadata."""
  points = [_Saved("save point", folder, p, p) for p in checkpoint.steps(folder)
            if p < first_missing]
  return sorted(points + _periodic_candidates(folder, first_missing, label),
                key=lambda s: s.tokens, reverse=True)


def _periodic_candidates(folder: epath.Path, first_missing: int, label: str) -> list[_Saved]:
  periodic, found = periodic_dir(folder), []
  for step in checkpoint.steps(periodic):
    try:
      tokens = checkpoint.read_meta(periodic, step)["tokens"]
    except checkpoint.Unreadable as e:
      _warn_set_aside(periodic, step, e, label)
      continue
    if tokens < first_missing:
      found.append(_Saved("periodic", periodic, step, tokens))
    else:  # past a missing save point (one added to the grid, or set aside): useless
      checkpoint.delete(periodic, step)
  return found


def _restore_state(trainer: train.Trainer, folder: epath.Path, step: int, label: str):
  items, meta = _restore(folder, step, dict(
      model=trainer.abstract_model_state, optimizer=trainer.abstract_state.optimizer), label)
  return train.TrainState(items["model"], **items["optimizer"]), _counters(meta)


def _restore(folder: epath.Path, step: int, abstract_items: dict, label: str, *,
             from_memory: bool = False):
  """checkpoint.restore; an unreadable checkpoint is set aside first, so the stage
  that wrote it counts as incomplete and runs again."""
  try:
    return checkpoint.restore(folder, step, abstract_items, from_memory=from_memory)
  except checkpoint.Unreadable as e:
    _warn_set_aside(folder, step, e, label)
    raise


def _warn_set_aside(folder: epath.Path, step: int, error: Exception, label: str) -> None:
  aside = checkpoint.set_aside(folder, step)
  print(f"{label}  WARNING: checkpoint at step {step:,} is unreadable, moved to {aside} "
        f"({error})", flush=True)


def _counters(meta: dict) -> train.Counters:
  return train.Counters(**{f.name: meta[f.name] for f in dataclasses.fields(train.Counters)})


def _learning_rate(section: ml_collections.ConfigDict, counters: train.Counters,
                   budget: int) -> float:
  """The rate of the next update. Schedules with a horizon (cosine) reach it at the
  token budget: its length in steps is estimated from the tokens per step so far."""
  return optim.learning_rate_at(train.StepConfig.from_section(section), counters.step,
                                _steps_for(section, counters, budget))


def _steps_for(section: ml_collections.ConfigDict, counters: train.Counters, budget: int) -> int:
  if counters.step:
    per_step = counters.tokens / counters.step
  else:  # a full batch, until the first one is seen
    per_step = section.batch_size * (section.input_length + section.target_length)
  return max(1, math.ceil(budget / per_step))


# ---------------------------------------------------------------- cooldown (WSD)

def cooldown_complete(workdir: epath.Path, stage: grid.Cooldown) -> bool:
  return bool(checkpoint.steps(stage_dir(workdir, stage)))


def run_cooldown(ctx: Context, stage: grid.Cooldown, label: str) -> None:
  """From the stable run's checkpoint at this budget's branch point, decays the
  learning rate to 0 while the run goes on to D_p tokens (same data stream)."""
  section = ctx.cfg.pretrain
  trainer = ctx.trainer(stage.train, "pretrain")
  branch = max(1, round((1.0 - float(section.cooldown_fraction)) * stage.D_p))
  state, counters = _restore_state(trainer, stage_dir(ctx.workdir, stage.train), branch, label)
  with timing.phase("input"):
    batches = ctx.data.train_batches(stage.train.data, ctx.cfg.seed,
                                     ctx.input_shards(trainer, "pretrain"),
                                     budget_tokens=stage.D_p)
    inputs.skip(batches, counters.step)
  # Chosen so that WSD's own branch step for this length is the step we branch at.
  total_steps = max(counters.step + 1, round(counters.step / (1.0 - section.cooldown_fraction)))
  step_cfg = train.StepConfig.from_section(section)
  with preemption.deferred(), batches:  # a short stage: preempted, it starts over
    state = train.train(
        trainer, state, batches, counters, until=lambda c: c.tokens >= stage.D_p,
        learning_rate=lambda c: optim.learning_rate_at(step_cfg, c.step, total_steps),
        progress=ctx.progress(stage, label, "pretrain", total_tokens=stage.D_p),
        on_step=lambda s, c: preemption.stop_if_reached(c.step, label))
    checkpoint.save(stage_dir(ctx.workdir, stage), stage.D_p, dict(model=state.model),
                    dict(dataclasses.asdict(counters), branch_tokens=branch))


# ---------------------------------------------------------------- finetune

def finetune_complete(workdir: epath.Path, stage: grid.Finetune) -> bool:
  return bool(checkpoint.steps(stage_dir(workdir, stage)))


def finetune_source_saved(workdir: epath.Path, stage: grid.Finetune) -> bool:
  """Whether the weights the finetune starts from are saved."""
  folder, step = _weights_checkpoint(workdir, stage.source)
  return step in checkpoint.steps(folder)


def run_finetune(ctx: Context, stage: grid.Finetune, label: str) -> None:
  """Starts from the weights at D_p; trains `finetune.steps` updates on D_f tokens of
  the pair (a prefix LM for decoder-only models)."""
  section = ctx.cfg.finetune
  trainer = ctx.trainer(stage.source.train, "finetune")
  state = trainer.start_from(_finetune_source(ctx, stage, trainer, label))
  subset, batches = _finetune_batches(ctx, stage, trainer)
  counters = train.Counters()
  with preemption.deferred(), batches:  # a short stage: preempted, it starts over
    state = train.train(
        trainer, state, batches, counters, **_finetune_loop(section, label),
        progress=ctx.progress(stage, label, "finetune", total_steps=section.steps))
    checkpoint.save(stage_dir(ctx.workdir, stage), section.steps, dict(model=state.model),
                    _finetune_meta(counters, subset))


def together_key(stage: grid.Finetune) -> tuple:
  """Finetunes with equal keys can train together (`run_finetunes`): one model shape,
  one pair and D_f, so one data stream; they differ in their starting weights only."""
  train_stage = stage.source.train
  return (train_stage.size, train_stage.objective, stage.pair, stage.D_f)


def finetune_groups(finetunes: list[grid.Finetune], together: int) -> list[list[grid.Finetune]]:
  """The finetunes in fixed groups of up to `together` with equal `together_key`s, in
  the given order. Fixed, because a member's last bits depend on its group's size: a
  resumed or shared grid trains each group at the same size as an uninterrupted one."""
  by_key: dict[tuple, list[grid.Finetune]] = {}
  for stage in finetunes:
    by_key.setdefault(together_key(stage), []).append(stage)
  return [same[i:i + together] for same in by_key.values()
          for i in range(0, len(same), together)]


def run_finetunes(ctx: Context, slots: list[grid.Finetune | None],
                  label: str) -> dict[str, train.Diverged]:
  """A group of finetunes (equal `together_key`s) trained together as one vmapped
  program (train.TrainerGroup) on the batches `run_finetune` would use: each member
  ends where it would alone, up to float rounding. A None slot (a member trained
  elsewhere, or that cannot be) holds a copy of the first member's start and keeps the
  group's size, and so every member's bits; it is neither saved nor logged. Saves every
  member that did not diverge; returns those that did, by key."""
  section = ctx.cfg.finetune
  members = [s for s in slots if s is not None]
  trainers = train.get_trainer_group(ctx.trainer(members[0].source.train, "finetune"),
                                     len(slots))
  starts = {s.key: _finetune_source(ctx, s, trainers.trainer, label) for s in members}
  state = trainers.start_from([starts[(s or members[0]).key] for s in slots])
  subset, batches = _finetune_batches(ctx, members[0], trainers.trainer)
  counters, watch = train.Counters(), train.MemberWatch(trainers)
  primary = mesh_lib.is_primary()
  progress = logs.GroupProgress.build(
      label, section.log_every,
      [log_dir(ctx.workdir, s) if primary and s is not None else None for s in slots],
      show=primary, total_steps=section.steps, peak_flops=ctx.peak_flops)
  stopped = lambda: {slots[i].key: e for i, e in watch.diverged.items() if slots[i] is not None}
  with preemption.deferred(), batches:  # a short stage: preempted, it starts over
    try:
      state = train.train(trainers, state, batches, counters, **_finetune_loop(section, label),
                          progress=progress, watch=watch)
    except train.Diverged:  # every member has: nothing to save
      return stopped()
    # each member's share of the group's seconds: the rows' costs add up to the run's
    meta = dict(_finetune_meta(counters, subset), wall_s=counters.wall_s / len(slots),
                trained_together=len(slots))
    for i, stage in enumerate(slots):
      if stage is not None and i not in watch.diverged:
        checkpoint.save(stage_dir(ctx.workdir, stage), section.steps,
                        dict(model=trainers.member(state, i)), meta)
  return stopped()


def _finetune_source(ctx: Context, stage: grid.Finetune, trainer: train.Trainer,
                     label: str) -> train.ModelState:
  folder, step = _weights_checkpoint(ctx.workdir, stage.source)
  items, _ = _restore(folder, step, dict(model=trainer.abstract_model_state), label,
                      from_memory=True)
  return items["model"]


def _finetune_batches(ctx: Context, stage: grid.Finetune, trainer: train.Trainer):
  section = ctx.cfg.finetune
  with timing.phase("input"):
    subset = ctx.data.finetune_subset(stage.pair, stage.D_f, section)
    batches = ctx.data.finetune_batches(subset, section.batch_size, ctx.cfg.seed,
                                        ctx.input_shards(trainer, "finetune"), section.steps)
  return subset, batches


def _finetune_loop(section: ml_collections.ConfigDict, label: str) -> dict:
  """A finetune's length, schedule, and preemption check (train.train's arguments)."""
  step_cfg = train.StepConfig.from_section(section)
  return dict(until=lambda c: c.step >= section.steps,
              learning_rate=lambda c: optim.learning_rate_at(step_cfg, c.step, section.steps),
              on_step=lambda s, c: preemption.stop_if_reached(c.step, label))


def _finetune_meta(counters: train.Counters, subset) -> dict:
  return dict(dataclasses.asdict(counters), examples=subset.n_examples,
              subset_tokens=subset.n_tokens)


# ---------------------------------------------------------------- evaluate

def evaluate_complete(workdir: epath.Path, stage: grid.Evaluate) -> bool:
  row = results.read_row(workdir, stage.key)
  return row is not None and row.get("status") == "ok"


def run_evaluate(ctx: Context, stage: grid.Evaluate, label: str) -> dict:
  """Translation metrics on the pair, or held-out LM loss; writes the row."""
  trainer = ctx.trainer(stage.weights.train, "finetune" if stage.weights.finetune else "pretrain")
  folder, step = _weights_checkpoint(ctx.workdir, stage.weights)
  items, _ = _restore(folder, step, dict(model=trainer.abstract_model_state), label,
                      from_memory=True)
  if stage.pair:
    scores = evaluate.translation(ctx.data, trainer, items["model"], stage.pair)
    hypothesis, reference = scores.pop("example")
    shown = (f"ce {scores['ce']:.3f}  BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  "
             f"e.g. {hypothesis!r} <- ref {reference!r}")
  else:
    scores = evaluate.language_model(ctx.data, trainer, items["model"], stage.weights.train.data)
    shown = f"loss {scores['loss']:.3f}  ({scores['bits_per_token']:.3f} bits/token)"
  row = dict(describe(ctx.cfg, ctx.workdir, stage), status="ok", **scores)
  write_row(ctx.workdir, row)
  print(f"{label}  {shown}", flush=True)
  return row


def write_row(workdir: epath.Path, row: dict) -> None:
  """Process 0 writes the study's rows; every process computed them alike."""
  if mesh_lib.is_primary():
    results.write_row(workdir, row)


def describe(cfg: ml_collections.ConfigDict, workdir: epath.Path, stage: grid.Evaluate) -> dict:
  """Every column of a row that says what was evaluated (and what it cost, once run)."""
  weights, train_stage = stage.weights, stage.weights.train
  counts = accounting.param_counts(train_stage.size)
  finetune = weights.finetune
  model_source = finetune.source if finetune else weights
  row = dict(
      key=stage.key, kind="translation" if stage.pair else "lm", size=train_stage.size_name,
      N=counts["total"], N_e=counts["encoder"], N_d=counts["decoder"],
      N_nonembed=counts["non_embedding"], d_model=train_stage.size.d_model,
      encoder_layers=train_stage.size.num_encoder_layers,
      decoder_layers=train_stage.size.num_decoder_layers,
      mixture=train_stage.data.label, rates=json.dumps(dict(train_stage.data.rates)),
      p=train_stage.data.share(stage.pair) if stage.pair else None, pair=stage.pair,
      objective=train_stage.objective, D_p=weights.D_p, D_f=finetune.D_f if finetune else 0,
      schedule=cfg.pretrain.schedule,
      branch="cooldown" if isinstance(model_source.stage, grid.Cooldown) else "main",
      pretrain_key=train_stage.key, finetune_key=finetune.key if finetune else None,
      config_hash=grid.stable_hash(stage.fields))
  row.update(_costs(workdir, weights))
  return row


def _costs(workdir: epath.Path, weights: grid.Weights) -> dict:
  """Tokens seen, FLOPs and seconds behind `weights`, from the checkpoints' metadata."""
  finetune = weights.finetune
  source = finetune.source if finetune else weights
  folder, step = _weights_checkpoint(workdir, source)
  if step not in checkpoint.steps(folder):  # a run that stopped before reaching it
    return {}
  meta = checkpoint.read_meta(folder, step)
  costs = dict(D_p_seen=meta["tokens"], flops=meta["flops"], wall_s=meta["wall_s"])
  if finetune is not None and checkpoint.steps(stage_dir(workdir, finetune)):
    fin_folder, fin_step = _weights_checkpoint(workdir, weights)
    fin_meta = checkpoint.read_meta(fin_folder, fin_step)
    costs.update(D_f_seen=fin_meta["subset_tokens"], flops=costs["flops"] + fin_meta["flops"],
                 wall_s=costs["wall_s"] + fin_meta["wall_s"])
  return costs
