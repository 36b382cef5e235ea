"""Run a study's stages in dependency order, skipping every stage already complete.

Errors are contained per stage: a failed stage marks its dependants failed (their
rows say so), the rest of the grid goes on, and nothing already computed is lost. A
training stage whose loss goes NaN or infinite (`train.Diverged`) marks its dependants'
rows 'diverged', with the step in `diverged_step`; the fits leave them out with a note.

Several drivers may share one workdir (a grid split over machines, or a retry racing a slow
original): each stage runs under a lease (scaling.lease), so no two run it at once. A
stage leased elsewhere, or whose upstream is, waits while the driver goes on with the
rest, and is looked at again every few seconds (skipped once the other driver completed it).

JAX's persistent compilation cache lives in <workdir>/xla_cache, so the drivers of a grid,
and a re-run, compile each program once between them (see `use_compilation_cache`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Iterator

import jax
import ml_collections
from etils import epath

from scaling import config as config_lib
from scaling import grid
from scaling import inputs
from scaling import lease as lease_lib
from scaling import logs
from scaling import mesh as mesh_lib
from scaling import report
from scaling import results
from scaling import stages
from scaling import timing
from scaling import train


@dataclasses.dataclass
class Summary:
  ran: int = 0
  skipped: int = 0
  failed: int = 0
  diverged: int = 0   # stages whose training diverged, and the stages after them
  wall_s: float = 0.0
  seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # by phase (scaling.timing)


@dataclasses.dataclass(frozen=True)
class Stopped:
  """Why a stage did not complete: what the stage that raised (itself or one upstream)
  raised, and that stage's kind."""
  kind: str
  error: Exception

  @property
  def diverged(self) -> bool:
    return isinstance(self.error, train.Diverged)


@dataclasses.dataclass(frozen=True)
class StageKind:
  name: str
  complete: Callable[[stages.Context, object], bool]
  run: Callable[[stages.Context, object, str], object]


KINDS = {
    grid.Train: StageKind(
        "train", lambda ctx, s: not stages.train_missing(ctx.cfg, ctx.workdir, s), stages.run_train),
    grid.Cooldown: StageKind(
        "cooldown", lambda ctx, s: stages.cooldown_complete(ctx.workdir, s), stages.run_cooldown),
    grid.Finetune: StageKind(
        "finetune", lambda ctx, s: stages.finetune_complete(ctx.workdir, s), stages.run_finetune),
    grid.Evaluate: StageKind(
        "evaluate", lambda ctx, s: stages.evaluate_complete(ctx.workdir, s), stages.run_evaluate),
}


def prepare(cfg: ml_collections.ConfigDict,
            workdir: epath.PathLike) -> tuple[stages.Context, grid.Plan]:
  """Everything checked and built before any training: plan, sizes, mesh, data, laws."""
  plan = check(cfg)
  return build_context(cfg, workdir, plan), plan


def check(cfg: ml_collections.ConfigDict) -> grid.Plan:
  """The study's plan, once its config, grid and fitted curves are known to work."""
  plan = grid.expand(cfg)  # validates the config
  report.check_curves(cfg, produced_columns(plan))
  return plan


def build_context(cfg: ml_collections.ConfigDict, workdir: epath.PathLike,
                  plan: grid.Plan) -> stages.Context:
  """What the stages run in this process share: the mesh over this process's devices
  (checked against the grid's sizes and batches), the data, the compilation cache."""
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  cache = use_compilation_cache(workdir)  # before anything compiles
  mesh_cfg = mesh_lib.MeshConfig(**cfg.mesh.to_dict())
  check_mesh(cfg, plan, jax.device_count())
  mesh = mesh_lib.make_mesh(mesh_cfg)
  data = inputs.StudyInputs.build(cfg, workdir)
  ctx = stages.Context(cfg, workdir, data, mesh)
  ctx.peak_flops = train.matmul_peak_flops()
  print(f"study {cfg.name}: {plan.n_stages} stages on mesh {mesh_lib.describe(mesh)}; "
        f"measured matmul peak {ctx.peak_flops / 1e9:,.0f} GFLOP/s (for MFU)", flush=True)
  print(f"XLA compilation cache: {cache or 'off'}", flush=True)
  return ctx


CACHE_ENV = "SCALING_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no", "none")
_MIN_COMPILE_S = 0.1  # a micro model's programs compile in about that: cache them too
_cache_set_here: list[str] = []  # the folder this module last gave JAX, if any


def use_compilation_cache(workdir: epath.Path) -> str | None:
  """Points JAX's persistent compilation cache at <workdir>/xla_cache; the folder in effect,
  or None. A folder that anything else chose (JAX_COMPILATION_CACHE_DIR, jax.config, a fit
  that ran first) is kept. SCALING_COMPILATION_CACHE=off opts out; =FOLDER picks a folder."""
  setting = os.environ.get(CACHE_ENV, "").strip()
  if setting.lower() in _OFF or not jax.config.jax_enable_compilation_cache:
    return None
  current = jax.config.jax_compilation_cache_dir
  if current and current not in _cache_set_here:
    return current
  wanted = setting or os.fspath(workdir / "xla_cache")
  if wanted != current:
    from jax.experimental.compilation_cache import compilation_cache
    jax.config.update("jax_compilation_cache_dir", wanted)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      min(jax.config.jax_persistent_cache_min_compile_time_secs, _MIN_COMPILE_S))
    compilation_cache.reset_cache()  # JAX reads the folder once: again, if it compiled before
    _cache_set_here[:] = [wanted]
  return wanted


def produced_columns(plan: grid.Plan) -> set[str]:
  return results.produced_columns(translation=any(e.pair for e in plan.evaluates),
                                  lm=any(not e.pair for e in plan.evaluates),
                                  finetunes=bool(plan.finetunes))


def check_mesh(cfg: ml_collections.ConfigDict, plan: grid.Plan, n_devices: int) -> None:
  """Whether the mesh fits every size and batch of the grid on `n_devices` devices."""
  mesh_cfg = mesh_lib.MeshConfig(**cfg.mesh.to_dict())
  sections = ["pretrain", "eval"] + (["finetune"] if plan.finetunes else [])
  _check_input_shards(cfg, sections[:1] + sections[2:])
  for stage in plan.trains:
    for section in sections:
      try:
        mesh_lib.validate(mesh_cfg, stage.size, n_devices,
                          batch_size=int(cfg[section].batch_size))
      except ValueError as e:
        raise config_lib.ConfigError(f"mesh / {section}.batch_size: {e}") from e


def _check_input_shards(cfg, sections: list[str]) -> None:
  shards, processes = config_lib.input_shard_count(cfg), jax.process_count()
  if shards % processes:
    raise config_lib.ConfigError(f"data.input_shards={shards} must be a multiple of the "
                                 f"{processes} processes (each reads whole shards)")
  for section in sections:
    if cfg[section].batch_size % shards:
      raise config_lib.ConfigError(f"{section}.batch_size={cfg[section].batch_size} must be a "
                                   f"multiple of data.input_shards={shards}")


def run(cfg: ml_collections.ConfigDict, workdir: epath.PathLike) -> Summary:
  """Runs (or resumes) the whole study, then writes the fitted-law tables and plots, and
  says where the time went."""
  with timing.measure() as breakdown:
    summary = _run(cfg, workdir)
  summary.seconds = dict(breakdown.seconds)
  if mesh_lib.is_primary():
    print(breakdown.line(), flush=True)
  return summary


def _run(cfg: ml_collections.ConfigDict, workdir: epath.PathLike) -> Summary:
  start = time.perf_counter()
  with timing.phase("start-up"):
    ctx, plan = prepare(cfg, workdir)
  ordered = list(in_order(plan))
  walk = _Walk(ctx, Summary(), ordered)
  summary = walk.summary
  pending = list(enumerate(ordered, start=1))
  with logs.bars_above_prints(), _grid_bar(len(ordered)) as grid_bar:
    while pending:
      walk.waiting = set()
      for i, stage in pending:
        label = f"[{i}/{len(ordered)}] {KINDS[type(stage)].name} {where(stage)}"
        if walk.visit(stage, label):
          grid_bar.update()
        else:
          walk.waiting.add(stage.key)
      pending = [(i, stage) for i, stage in pending if stage.key in walk.waiting]
      if pending:
        time.sleep(poll_s())
  if mesh_lib.is_primary():  # the tables and plots, once (one driver at a time)
    with lease_lib.take_when_free(ctx.workdir, "report", poll_s()), timing.phase("report"):
      report.write(cfg, ctx.workdir, results.load(ctx.workdir))
  summary.wall_s = time.perf_counter() - start
  print(f"done: {summary.ran} stages ran, {summary.skipped} skipped, {summary.failed} failed, "
        f"{summary.diverged} diverged in {summary.wall_s:.0f} s; results in {ctx.workdir}",
        flush=True)
  return summary


def poll_s() -> float:
  return min(lease_lib.timeout_s() / 4, 5.0)


@dataclasses.dataclass
class _Walk:
  """One driver's pass over the stages: what ran, what stopped, what waits on others."""
  ctx: stages.Context
  summary: Summary
  ordered: list = dataclasses.field(default_factory=list)  # every stage, in running order
  stopped: dict[str, Stopped] = dataclasses.field(default_factory=dict)  # key -> why
  waiting: set[str] = dataclasses.field(default_factory=set)  # keys left for a later pass
  said: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> wait last printed
  settled: set[str] = dataclasses.field(default_factory=set)  # trained with an earlier stage

  def __post_init__(self):
    together = int(self.ctx.cfg.finetune.get("together", 1))
    finetunes = [s for s in self.ordered if isinstance(s, grid.Finetune)]
    self.groups = {s.key: group for group in stages.finetune_groups(finetunes, together)
                   for s in group}  # key -> its group

  def visit(self, stage, label: str) -> bool:
    """Settles a stage (ran, skipped or stopped): True; False while another driver holds
    its lease or its upstream's."""
    kind, before = KINDS[type(stage)], upstream(stage)
    if stage.key in self.settled:
      return True
    if before is not None and before.key in self.stopped:
      self.stopped[stage.key] = self.stopped[before.key]
      _stop_without_running(self.ctx, stage, label, self.summary, self.stopped[stage.key])
    elif mesh_lib.agreed(kind.complete(self.ctx, stage)):
      self._skip(label)
    elif before is not None and before.key in self.waiting:
      self._say_wait(stage.key, label, "waits for its upstream stage, run by another driver")
      return False
    elif (lease := self._take_lease(stage, label)) is None:
      return False
    else:
      with lease:  # released once the stage completed or failed
        if isinstance(stage, grid.Finetune) and self.ctx.cfg.finetune.together > 1:
          self._run_together(stage, label)
        else:
          self._run(kind, stage, label)
    return True

  def _run_together(self, stage: grid.Finetune, label: str) -> None:
    """The finetune's fixed group (stages.finetune_groups), trained as one program: the
    members this driver can train now (weights saved, not complete, leased here) are
    saved; the other slots only keep the group's size."""
    if self._complete(stage):
      self._skip(label)
      return
    group = self.groups[stage.key]
    with contextlib.ExitStack() as leases:
      slots = [other if other is stage or self._trains_here(other, leases) else None
               for other in group]
      members = [s for s in slots if s is not None]
      self._settle_group(stage, members, _attempt_together(
          f"{label}  ({self._group_text(stage, slots)})", self.ctx, slots))

  def _group_text(self, stage: grid.Finetune, slots: list) -> str:
    others = " ".join(self._index(s) for s in slots if s is not None and s is not stage)
    idle = sum(s is None for s in slots)
    return (f"{'with ' + others + ': ' if others else ''}{len(slots)} finetunes together"
            f"{f', {idle} of them kept only for the size' if idle else ''}")

  def _trains_here(self, other: grid.Finetune, leases: contextlib.ExitStack) -> bool:
    """Whether this driver trains `other` in its group now: its weights are saved, it is
    neither complete nor settled, and its lease is taken (kept in `leases`)."""
    if (other.key in self.settled or upstream(other).key in self.stopped
        or not mesh_lib.agreed(stages.finetune_source_saved(self.ctx.workdir, other))
        or self._complete(other)):
      return False
    lease = self._take_lease(other, self._index(other), quiet=True)
    if lease is not None:
      leases.enter_context(lease)
    return lease is not None

  def _settle_group(self, visited: grid.Finetune, members: list,
                    outcome: dict[str, Exception | None]) -> None:
    self.settled.update(s.key for s in members if s is not visited)
    for stage in members:
      error = outcome[stage.key]
      if error is None:
        self.summary.ran += 1
        continue
      self.stopped[stage.key] = Stopped("finetune", error)
      if isinstance(error, train.Diverged):
        self.summary.diverged += 1
        print(f"{self._index(stage)} finetune {where(stage)}  DIVERGED: {error}", flush=True)
      else:
        self.summary.failed += 1

  def _index(self, stage) -> str:
    return f"[{self.ordered.index(stage) + 1}/{len(self.ordered)}]"

  def _complete(self, stage) -> bool:
    return mesh_lib.agreed(KINDS[type(stage)].complete(self.ctx, stage))

  def _take_lease(self, stage, label: str, quiet: bool = False):
    """This driver's lease on the stage (process 0 takes it, every process agrees), or None
    while a live driver elsewhere holds it (said once per holder, unless `quiet`)."""
    taken = lease_lib.take(self.ctx.workdir, stage.key) if mesh_lib.is_primary() else None
    if not mesh_lib.agreed(not isinstance(taken, lease_lib.Holder)):
      if not quiet:
        self._say_lease_wait(stage.key, label, taken)
      return None
    if isinstance(taken, lease_lib.Lease) and taken.took_over:
      print(f"{label}  (takes over the stale lease of {taken.took_over})", flush=True)
    return taken or contextlib.nullcontext()

  def _say_lease_wait(self, key: str, label: str, taken) -> None:
    if isinstance(taken, lease_lib.Holder):
      self._say_wait(key, label, f"waits on the lease of {taken.owner}",
                     f"heartbeat {taken.age_s:.0f} s ago")
    else:
      self._say_wait(key, label, "waits on another driver's lease")

  def _run(self, kind: StageKind, stage, label: str) -> None:
    # another driver may have completed it between the check and the lease
    if mesh_lib.agreed(kind.complete(self.ctx, stage)):
      self._skip(label)
    elif (error := attempt(label, self.summary, kind.run, self.ctx, stage, label)) is not None:
      self.stopped[stage.key] = Stopped(kind.name, error)
      if isinstance(stage, grid.Evaluate):
        write_stopped_row(self.ctx, stage, self.stopped[stage.key], "evaluation failed")

  def _skip(self, label: str) -> None:
    self.summary.skipped += 1
    print(f"{label}  (complete, skipped)", flush=True)

  def _say_wait(self, key: str, label: str, why: str, detail: str = "") -> None:
    if self.said.get(key) != why:  # once per holder, not at every poll
      self.said[key] = why
      print(f"{label}  ({why}{', ' + detail if detail else ''})", flush=True)


def _grid_bar(n_stages: int):
  """The grid's bar on process 0's terminal; a stand-in that draws nothing otherwise
  (the '[i/n]' stage lines say the same)."""
  shown = logs.on_terminal() and mesh_lib.is_primary()
  return logs.bar(desc="grid", total=n_stages, unit="stage", disable=not shown)


def in_order(plan: grid.Plan) -> Iterator:
  """Training runs and cooldowns first; then each evaluation right after its
  finetune, so rows arrive while the grid runs."""
  yield from plan.trains
  yield from plan.cooldowns
  for evaluate in plan.evaluates:
    if evaluate.weights.finetune is not None:
      yield evaluate.weights.finetune
    yield evaluate


def upstream(stage):
  if isinstance(stage, grid.Cooldown):
    return stage.train
  if isinstance(stage, grid.Finetune):
    return stage.source.stage
  if isinstance(stage, grid.Evaluate):
    return stage.weights.stage
  return None


def where(stage) -> str:
  if isinstance(stage, grid.Train):
    shape = "".join(f" {k}={v}" for k, v in stage.shape)
    return f"size={stage.size_name}{shape} data={stage.data.label}"
  if isinstance(stage, grid.Cooldown):
    return f"{where(stage.train)} D_p={stage.D_p:,}"
  if isinstance(stage, grid.Finetune):
    return f"{where(stage.source.train)} D_p={stage.source.D_p:,} pair={stage.pair} D_f={stage.D_f:,}"
  weights = stage.weights
  tail = f" D_f={weights.finetune.D_f:,}" if weights.finetune else ""
  what = f"pair={stage.pair}" if stage.pair else "held-out LM loss"
  return f"{where(weights.train)} D_p={weights.D_p:,}{tail} {what}"


def attempt(label: str, summary: Summary, fn, *args) -> Exception | None:
  """Runs a stage; what stopped it, or None once it completed."""
  print(label, flush=True)
  try:
    fn(*args)
  except (KeyboardInterrupt, SystemExit):
    raise
  except train.Diverged as e:  # an outcome of the science, not a bug: no traceback
    summary.diverged += 1
    print(f"{label}  DIVERGED: {e}", flush=True)
    return e
  except Exception as e:  # one failed stage must not lose the rest of the grid
    summary.failed += 1
    print(f"{label}  FAILED\n{traceback.format_exc()}", flush=True)
    return e
  summary.ran += 1
  return None


def _attempt_together(label: str, ctx: stages.Context,
                      slots: list) -> dict[str, Exception | None]:
  """Runs a group of finetunes; what stopped each member (None: it completed)."""
  members = [stage for stage in slots if stage is not None]
  print(label, flush=True)
  try:
    diverged = stages.run_finetunes(ctx, slots, label)
  except (KeyboardInterrupt, SystemExit):
    raise
  except Exception as e:  # noqa: BLE001  every member failed with it
    print(f"{label}  FAILED\n{traceback.format_exc()}", flush=True)
    return {stage.key: e for stage in members}
  return {stage.key: diverged.get(stage.key) for stage in members}


def _stop_without_running(ctx: stages.Context, stage, label: str, summary: Summary,
                          stop: Stopped) -> None:
  if stop.diverged:
    summary.diverged += 1
    print(f"{label}  (an earlier {stop.kind} stage diverged)", flush=True)
  else:
    summary.failed += 1
    print(f"{label}  (an earlier stage failed)", flush=True)
  if isinstance(stage, grid.Evaluate):
    write_stopped_row(ctx, stage, stop, "an earlier stage failed")


def write_stopped_row(ctx: stages.Context, stage: grid.Evaluate, stop: Stopped,
                       why_failed: str) -> None:
  row = stages.describe(ctx.cfg, ctx.workdir, stage)
  if stop.diverged:
    row.update(status="diverged", diverged_step=stop.error.step,
               error=f"{stop.kind} diverged: {stop.error}")
  else:
    row.update(status="failed", error=why_failed)
  stages.write_row(ctx.workdir, row)


def status(cfg: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
  """Prints which stages of the study are complete, without building anything."""
  plan = grid.expand(cfg)
  workdir = epath.Path(workdir)
  done = {name: 0 for name in ("train", "cooldown", "finetune")}
  totals = {"train": len(plan.trains), "cooldown": len(plan.cooldowns),
            "finetune": len(plan.finetunes)}
  for stage in (*plan.trains, *plan.cooldowns, *plan.finetunes):
    kind = KINDS[type(stage)]
    done[kind.name] += kind.complete(StatusContext(cfg, workdir), stage)
  rows = [results.read_row(workdir, s.key) for s in plan.evaluates]
  done_eval = sum(r is not None and r["status"] == "ok" for r in rows)
  failed = sum(r is not None and r["status"] == "failed" for r in rows)
  diverged = sum(r is not None and r["status"] == "diverged" for r in rows)
  parts = [f"{name} {done[name]}/{totals[name]}" for name in done if totals[name]]
  print("  ".join(parts) + f"  evaluate {done_eval}/{len(plan.evaluates)} "
        f"({failed} failed, {diverged} diverged)")


@dataclasses.dataclass
class StatusContext:
  """What the completion checks read: no data or mesh is built for `status`."""
  cfg: ml_collections.ConfigDict
  workdir: epath.Path
