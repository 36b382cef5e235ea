"""Run a study's stages in dependency order, skipping every stage already complete.

Errors are contained per stage: a failed stage marks its dependants failed (their
rows say so), the rest of the grid goes on, and nothing already computed is lost. A
training stage whose loss goes NaN or infinite (`train.Diverged`) marks its dependants'
rows 'diverged', with the step in `diverged_step`; the fits leave them out with a note.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Iterator

import jax
import ml_collections
from etils import epath

from scaling import config as config_lib
from scaling import grid
from scaling import inputs
from scaling import logs
from scaling import mesh as mesh_lib
from scaling import report
from scaling import results
from scaling import stages
from scaling import train


@dataclasses.dataclass
class Summary:
  ran: int = 0
  skipped: int = 0
  failed: int = 0
  diverged: int = 0   # stages whose training diverged, and the stages after them
  wall_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class _Stopped:
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
  plan = grid.expand(cfg)  # validates the config
  report.check_curves(cfg, produced_columns(plan))
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh_cfg = mesh_lib.MeshConfig(**cfg.mesh.to_dict())
  _check_mesh(cfg, mesh_cfg, plan)
  mesh = mesh_lib.make_mesh(mesh_cfg)
  data = inputs.StudyInputs.build(cfg, workdir)
  ctx = stages.Context(cfg, workdir, data, mesh)
  ctx.peak_flops = train.matmul_peak_flops()
  print(f"study {cfg.name}: {plan.n_stages} stages on mesh {mesh_lib.describe(mesh)}; "
        f"measured matmul peak {ctx.peak_flops / 1e9:,.0f} GFLOP/s (for MFU)", flush=True)
  return ctx, plan


def produced_columns(plan: grid.Plan) -> set[str]:
  return results.produced_columns(translation=any(e.pair for e in plan.evaluates),
                                  lm=any(not e.pair for e in plan.evaluates),
                                  finetunes=bool(plan.finetunes))


def _check_mesh(cfg, mesh_cfg: mesh_lib.MeshConfig, plan: grid.Plan) -> None:
  sections = ["pretrain", "eval"] + (["finetune"] if plan.finetunes else [])
  _check_input_shards(cfg, sections[:1] + sections[2:])
  for stage in plan.trains:
    for section in sections:
      try:
        mesh_lib.validate(mesh_cfg, stage.size, jax.device_count(),
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
  """Runs (or resumes) the whole study, then writes the fitted-law tables and plots."""
  start = time.perf_counter()
  ctx, plan = prepare(cfg, workdir)
  summary = Summary()
  stopped: dict[str, _Stopped] = {}  # stage key -> why it did not complete
  ordered = list(_in_order(plan))
  with logs.bars_above_prints(), _grid_bar(len(ordered)) as grid_bar:
    for i, stage in enumerate(ordered, start=1):
      kind = KINDS[type(stage)]
      label = f"[{i}/{len(ordered)}] {kind.name} {_where(stage)}"
      upstream = _upstream(stage)
      if upstream is not None and upstream.key in stopped:
        stopped[stage.key] = stopped[upstream.key]
        _stop_without_running(ctx, stage, label, summary, stopped[stage.key])
      elif mesh_lib.agreed(kind.complete(ctx, stage)):
        summary.skipped += 1
        print(f"{label}  (complete, skipped)", flush=True)
      elif (error := _attempt(label, summary, kind.run, ctx, stage, label)) is not None:
        stopped[stage.key] = _Stopped(kind.name, error)
        if isinstance(stage, grid.Evaluate):
          _write_stopped_row(ctx, stage, stopped[stage.key], "evaluation failed")
      grid_bar.update()
  if mesh_lib.is_primary():  # the tables and plots, once
    report.write(cfg, ctx.workdir, results.load(ctx.workdir))
  summary.wall_s = time.perf_counter() - start
  print(f"done: {summary.ran} stages ran, {summary.skipped} skipped, {summary.failed} failed, "
        f"{summary.diverged} diverged in {summary.wall_s:.0f} s; results in {ctx.workdir}",
        flush=True)
  return summary


def _grid_bar(n_stages: int):
  """The grid's bar on process 0's terminal; a stand-in that draws nothing otherwise
  (the '[i/n]' stage lines say the same)."""
  shown = logs.on_terminal() and mesh_lib.is_primary()
  return logs.bar(desc="grid", total=n_stages, unit="stage", disable=not shown)


def _in_order(plan: grid.Plan) -> Iterator:
  """Training runs and cooldowns first; then each evaluation right after its
  finetune, so rows arrive while the grid runs."""
  yield from plan.trains
  yield from plan.cooldowns
  for evaluate in plan.evaluates:
    if evaluate.weights.finetune is not None:
      yield evaluate.weights.finetune
    yield evaluate


def _upstream(stage):
  if isinstance(stage, grid.Cooldown):
    return stage.train
  if isinstance(stage, grid.Finetune):
    return stage.source.stage
  if isinstance(stage, grid.Evaluate):
    return stage.weights.stage
  return None


def _where(stage) -> str:
  if isinstance(stage, grid.Train):
    shape = "".join(f" {k}={v}" for k, v in stage.shape)
    return f"size={stage.size_name}{shape} data={stage.data.label}"
  if isinstance(stage, grid.Cooldown):
    return f"{_where(stage.train)} D_p={stage.D_p:,}"
  if isinstance(stage, grid.Finetune):
    return f"{_where(stage.source.train)} D_p={stage.source.D_p:,} pair={stage.pair} D_f={stage.D_f:,}"
  weights = stage.weights
  tail = f" D_f={weights.finetune.D_f:,}" if weights.finetune else ""
  what = f"pair={stage.pair}" if stage.pair else "held-out LM loss"
  return f"{_where(weights.train)} D_p={weights.D_p:,}{tail} {what}"


def _attempt(label: str, summary: Summary, fn, *args) -> Exception | None:
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


def _stop_without_running(ctx: stages.Context, stage, label: str, summary: Summary,
                          stop: _Stopped) -> None:
  if stop.diverged:
    summary.diverged += 1
    print(f"{label}  (an earlier {stop.kind} stage diverged)", flush=True)
  else:
    summary.failed += 1
    print(f"{label}  (an earlier stage failed)", flush=True)
  if isinstance(stage, grid.Evaluate):
    _write_stopped_row(ctx, stage, stop, "an earlier stage failed")


def _write_stopped_row(ctx: stages.Context, stage: grid.Evaluate, stop: _Stopped,
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
    done[kind.name] += kind.complete(_StatusContext(cfg, workdir), stage)
  rows = [results.read_row(workdir, s.key) for s in plan.evaluates]
  done_eval = sum(r is not None and r["status"] == "ok" for r in rows)
  failed = sum(r is not None and r["status"] == "failed" for r in rows)
  diverged = sum(r is not None and r["status"] == "diverged" for r in rows)
  parts = [f"{name} {done[name]}/{totals[name]}" for name in done if totals[name]]
  print("  ".join(parts) + f"  evaluate {done_eval}/{len(plan.evaluates)} "
        f"({failed} failed, {diverged} diverged)")


@dataclasses.dataclass
class _StatusContext:
  """What the completion checks read: no data or mesh is built for `status`."""
  cfg: ml_collections.ConfigDict
  workdir: epath.Path
