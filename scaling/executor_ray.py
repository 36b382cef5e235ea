"""Run a study's stages as Ray tasks: `python -m scaling run --executor ray [--address ...]`.

The driver checks the config, the plan, the mesh and the data exactly as the local executor
does, before any compute; then it connects to the Ray cluster at --address ('auto': the one
running on this machine; none: that one if any, else a new local one), checks that some node
can hold what each stage kind asks for (`cfg.resources`), and submits each stage as a task.
Upstream stages are passed to their dependants as ObjectRefs, so Ray starts each stage once
the stages it reads from are done; the driver prints a line as each task ends, then writes
the tables and plots as the local executor does.

Each training run is split into segments, one task per save point: the segment up to D_p[i]
resumes from segment i-1's checkpoint (as a re-run would), and the finetunes and evaluations
of D_p[i] depend on it alone, so they run while the pretraining goes on. Stage keys, the
checkpoint layout and the leases are the local executor's: either executor resumes the
other's work, and a Ray run may share a workdir with local drivers.

In the worker, a task builds the study's context once per process (as `runner.prepare`
does, on that worker's devices), skips its stage if complete, runs it under its lease with
the local executor's stage functions, and returns a small status. A stage whose upstream
failed or diverged is not run: its rows say so, as the local executor writes them. A worker
that dies mid-stage is retried (`resources.max_retries`): the retry waits for the dead
worker's lease to go stale (SCALING_LEASE_TIMEOUT_S) and resumes from the periodic
checkpoint, like a re-run. Workers get the driver's XLA_*, JAX_* and SCALING_* variables.
A SIGTERM to the driver stops every task and exits with the CLI's 75: a re-run resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator

import jax
import ml_collections
import ray
from absl import logging as absl_logging
from etils import epath

from scaling import config as config_lib
from scaling import grid
from scaling import inputs
from scaling import lease as lease_lib
from scaling import preemption
from scaling import report
from scaling import results
from scaling import runner
from scaling import stages
from scaling import train

CONNECT_TIMEOUT_ENV = "SCALING_RAY_CONNECT_TIMEOUT_S"
_DEFAULT_CONNECT_TIMEOUT_S = 10.0
_GCS_PORT = 6379  # Ray's default head port, when --address names a host alone
_FORWARDED_ENV = ("XLA_", "JAX_", "SCALING_", "TF_CPP_MIN_LOG_LEVEL")
_RESOURCE_FIELDS = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


@dataclasses.dataclass(frozen=True)
class Task:
  """One Ray task: a stage, or a training run's segment up to one save point."""
  id: str
  stage: object                      # grid.Train | Cooldown | Finetune | Evaluate
  kind: str                          # a key of cfg.resources
  label: str
  stop_at: int | None = None         # a segment: the save point it trains up to
  upstream: tuple[str, ...] = ()     # ids of the tasks it starts after


@dataclasses.dataclass(frozen=True)
class Status:
  """What became of a task, as the worker tells the driver."""
  outcome: str                       # ran | skipped | failed | diverged | stopped (upstream)
  stop: runner.Stopped | None = None   # why it and its dependants did not complete
  wall_s: float = 0.0
  took_over: str | None = None       # the stale lease it took over (a retry), if any


# ---------------------------------------------------------------- the driver

def run(cfg: ml_collections.ConfigDict, workdir: epath.PathLike,
        address: str | None = None) -> runner.Summary:
  """Runs (or resumes) the whole study on a Ray cluster, then writes the fitted-law tables
  and plots; the same Summary as the local executor's `runner.run`."""
  start = time.perf_counter()
  plan = runner.check(cfg)
  workdir = epath.Path(workdir)
  work = tasks(cfg, plan)
  _check_before_compute(cfg, plan, workdir, {task.kind for task in work})
  _connect(address)
  try:
    check_cluster_fits(cfg, {task.kind for task in work}, address)
    summary = _follow(cfg, workdir, work)
  finally:
    ray.shutdown()
  with lease_lib.take_when_free(workdir, "report", runner.poll_s()):  # the tables and plots, once
    report.write(cfg, workdir, results.load(workdir))
  summary.wall_s = time.perf_counter() - start
  print(f"done: {summary.ran} tasks ran, {summary.skipped} skipped, {summary.failed} failed, "
        f"{summary.diverged} diverged in {summary.wall_s:.0f} s; results in {workdir}",
        flush=True)
  return summary


def tasks(cfg: ml_collections.ConfigDict, plan: grid.Plan) -> list[Task]:
  """Every task of the plan, each after its upstream: the training runs' segments, then
  the other stages in the local executor's order."""
  found, segments = [], {}  # (train key, save point) -> segment id
  for stage in plan.trains:
    previous = ()
    for point in stages.save_points(cfg, stage):
      segments[stage.key, point] = f"{stage.key}@{point}"
      found.append(Task(segments[stage.key, point], stage, "train",
                        f"train {runner.where(stage)} until {point:,} tokens", point, previous))
      previous = (segments[stage.key, point],)
  for stage in runner.in_order(plan):
    if isinstance(stage, grid.Train):
      continue
    upstream = runner.upstream(stage)
    if isinstance(upstream, grid.Train):
      upstream_id = segments[upstream.key, stages.save_point(cfg, _budget(stage))]
    else:
      upstream_id = upstream.key
    kind = runner.KINDS[type(stage)].name
    found.append(Task(stage.key, stage, kind, f"{kind} {runner.where(stage)}",
                      upstream=(upstream_id,)))
  return found


def _budget(stage) -> int:
  """The D_p whose weights a stage starts from."""
  if isinstance(stage, grid.Cooldown):
    return stage.D_p
  return stage.source.D_p if isinstance(stage, grid.Finetune) else stage.weights.D_p


def _check_before_compute(cfg: ml_collections.ConfigDict, plan: grid.Plan,
                          workdir: epath.Path, kinds: set[str]) -> None:
  """What `runner.prepare` checks, here: the mesh on the devices each stage kind will
  get (where the config says), the data's names; the vocabulary is trained once, here."""
  if plan.finetunes and cfg.finetune.together > 1:
    raise config_lib.ConfigError(
        f"finetune.together={cfg.finetune.together}: the Ray executor runs each finetune "
        "as its own task, as soon as its checkpoint is saved; set finetune.together=1 "
        "(groups are the local executor's)")
  workdir.mkdir(parents=True, exist_ok=True)
  runner.use_compilation_cache(workdir)  # the fits compile here
  for n_devices in sorted({n for kind in kinds if (n := _devices(cfg, kind)) is not None}):
    runner.check_mesh(cfg, plan, n_devices)
  inputs.StudyInputs.build(cfg, workdir)


def _devices(cfg: ml_collections.ConfigDict, kind: str) -> int | None:
  """How many devices a stage of this kind sees: its GPUs, the driver's count when it
  asks for no accelerator, unknown here for custom resources (each worker checks)."""
  wanted = cfg.resources[kind]
  if wanted.num_gpus:
    return max(1, int(wanted.num_gpus))
  return None if wanted.resources else jax.device_count()


def _connect(address: str | None) -> None:
  """Joins the cluster at `address`; without one, Ray's rule: the cluster `ray start`
  started on this machine if any, else a new local one. A cluster that cannot be reached
  is a ConfigError naming the address, found in seconds."""
  if address is not None and address != "auto":
    _probe(address)
  on_sigterm = signal.getsignal(signal.SIGTERM)
  # Ray forks and execs its processes: no JAX code runs in the child, whatever JAX warns.
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
    try:
      ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
      if address is None:
        raise
      raise config_lib.ConfigError(f"--address {address}: could not join a Ray cluster "
                                   f"there ({e})") from e
  if on_sigterm is not None and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, on_sigterm)  # ray.init's replaced the CLI's (exit 75)


def _probe(address: str) -> None:
  """Ray itself retries an unreachable head for minutes: ask the port first."""
  where = address.split("://")[-1]
  host, _, port = where.rpartition(":")
  host, port = (host, port) if port.isdigit() else (where, str(_GCS_PORT))
  host = host.strip("[]")  # an IPv6 address, [::1]:6379
  timeout = float(os.environ.get(CONNECT_TIMEOUT_ENV) or _DEFAULT_CONNECT_TIMEOUT_S)
  try:
    with socket.create_connection((host, int(port)), timeout=timeout):
      return
  except OSError as e:
    raise config_lib.ConfigError(f"--address {address}: no Ray cluster answers at "
                                 f"{host}:{port} within {timeout:g} s ({e})") from e


def check_cluster_fits(cfg: ml_collections.ConfigDict, kinds: set[str],
                       address: str | None) -> None:
  """A ConfigError naming the field when no node of the cluster could ever run a stage
  kind (Ray would wait for such a node forever)."""
  nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
  where = f" at {address}" if address else ""
  for kind in sorted(kinds):
    wanted = _request(cfg, kind)
    if any(all(node.get(name, 0.0) >= amount for name, amount in wanted.items())
           for node in nodes):
      continue
    for name, amount in wanted.items():
      most = max((node.get(name, 0.0) for node in nodes), default=0.0)
      if amount > most:
        raise config_lib.ConfigError(
            f"{_field(kind, name)}={amount:g}: no node of the Ray cluster{where} has that "
            f"much {name} (at most {most:g} on one node)")
    raise config_lib.ConfigError(f"resources.{kind}: no node of the Ray cluster{where} has "
                                 f"all of {wanted} at once")


def _request(cfg: ml_collections.ConfigDict, kind: str) -> dict[str, float]:
  """What a stage of `kind` asks of a node, in Ray's resource names."""
  wanted = cfg.resources[kind]
  request = {"CPU": wanted.num_cpus, "GPU": wanted.num_gpus, "memory": wanted.memory,
             **wanted.resources.to_dict()}
  return {name: float(amount) for name, amount in request.items() if amount}


def _field(kind: str, name: str) -> str:
  return f"resources.{kind}.{_RESOURCE_FIELDS.get(name, 'resources.' + name)}"


def _options(cfg: ml_collections.ConfigDict, task: Task, env: dict[str, str]) -> dict:
  wanted = cfg.resources[task.kind]
  options = dict(num_cpus=float(wanted.num_cpus), num_gpus=float(wanted.num_gpus),
                 max_retries=int(cfg.resources.max_retries), retry_exceptions=False,
                 runtime_env={"env_vars": env}, name=f"{task.kind} {task.id}")
  if wanted.memory:
    options["memory"] = int(wanted.memory)
  if wanted.resources:
    options["resources"] = {k: float(v) for k, v in wanted.resources.items()}
  return options


def forwarded_env() -> dict[str, str]:
  """The driver's variables the workers need to compute what it would (XLA's flags and
  platforms, the lease timeout, the compilation cache)."""
  return {name: value for name, value in os.environ.items() if name.startswith(_FORWARDED_ENV)}


def _follow(cfg: ml_collections.ConfigDict, workdir: epath.Path,
            work: list[Task]) -> runner.Summary:
  """Submits every task not yet complete, then counts and prints each as it ends."""
  refs = _submit(cfg, workdir, work)
  resources = ray.cluster_resources()
  print(f"study {cfg.name}: {len(refs)} of {len(work)} tasks to run on the Ray cluster's "
        f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs", flush=True)
  summary = runner.Summary()
  with _sigterm_noted() as sigterm:
    for k, (task, status) in enumerate(_ended(cfg, workdir, work, refs, sigterm), start=1):
      _count(summary, status)
      print(f"[{k}/{len(work)}] {task.label}  {_said(status)}", flush=True)
  return summary


@contextlib.contextmanager
def _sigterm_noted() -> Iterator[threading.Event]:
  """A SIGTERM, noted for the wait loop to answer: an exception raised by a handler inside
  ray.wait comes out as exit status 1, not the CLI's 75 (preempted, run again)."""
  heard = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield heard
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: heard.set())
  try:
    yield heard
  finally:
    signal.signal(signal.SIGTERM, previous)


def _submit(cfg: ml_collections.ConfigDict, workdir: epath.Path,
            work: list[Task]) -> dict[str, ray.ObjectRef]:
  """A task per stage not complete yet (a re-run starts no worker for the rest), with its
  upstream tasks' results as arguments: Ray starts it once they are done."""
  cfg_ref, env = ray.put(cfg), forwarded_env()
  done = runner.StatusContext(cfg, workdir)
  refs: dict[str, ray.ObjectRef] = {}
  for task in work:
    if not _complete(done, task):
      upstream = [refs[u] for u in task.upstream if u in refs]
      refs[task.id] = _run_task.options(**_options(cfg, task, env)).remote(
          cfg_ref, os.fspath(workdir), task, *upstream)
  return refs


def _ended(cfg: ml_collections.ConfigDict, workdir: epath.Path, work: list[Task],
           refs: dict[str, ray.ObjectRef],
           sigterm: threading.Event) -> Iterator[tuple[Task, Status]]:
  """Each task and what became of it, as it ends; first the complete ones, not submitted."""
  for task in work:
    if task.id not in refs:
      yield task, Status("skipped")
  pending = {refs[task.id]: task for task in work if task.id in refs}
  while pending:
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
    if sigterm.is_set():  # the tasks stop with the driver; a re-run resumes them
      raise preemption.Preempted("SIGTERM while the Ray tasks ran")
    for ref in ready:
      task = pending.pop(ref)
      yield task, _status(cfg, workdir, task, refs)


def _status(cfg: ml_collections.ConfigDict, workdir: epath.Path, task: Task,
            refs: dict[str, ray.ObjectRef]) -> Status:
  """The task's status; for a task Ray gave up on (its worker died past its retries, or
  an upstream's did), one the driver makes, writing the rows a worker would have."""
  try:
    return ray.get(refs[task.id])
  except ray.exceptions.RayError as e:
    stop = runner.Stopped(task.kind, RuntimeError(_first_line(e)))
    upstream_failed = any(_raised(refs[u]) for u in task.upstream if u in refs)
    if isinstance(task.stage, grid.Evaluate):
      why = "an earlier stage failed" if upstream_failed else "evaluation failed"
      runner.write_stopped_row(runner.StatusContext(cfg, workdir), task.stage, stop, why)
    return Status("stopped" if upstream_failed else "failed", stop)


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _raised(ref: ray.ObjectRef) -> bool:
  ready, _ = ray.wait([ref], timeout=0)
  if not ready:
    return False
  try:
    ray.get(ref)
  except ray.exceptions.RayError:
    return True
  return False


def _count(summary: runner.Summary, status: Status) -> None:
  outcome = status.outcome
  if outcome == "stopped":
    outcome = "diverged" if status.stop.diverged else "failed"
  setattr(summary, outcome, getattr(summary, outcome) + 1)


def _said(status: Status) -> str:
  said = {"ran": f"done in {status.wall_s:.0f} s", "skipped": "(complete, skipped)"}.get(
      status.outcome)
  if said is None and status.outcome == "stopped":
    said = (f"(an earlier {status.stop.kind} stage diverged)" if status.stop.diverged
            else "(an earlier stage failed)")
  elif said is None:
    said = f"{status.outcome.upper()}: {status.stop.error}"
  if status.took_over:
    said += f"  (took over the stale lease of {status.took_over})"
  return said


# ---------------------------------------------------------------- the workers

@ray.remote
def _run_task(cfg: ml_collections.ConfigDict, workdir: str, task: Task,
              *upstream: Status) -> Status:
  absl_logging.set_verbosity(absl_logging.ERROR)  # as the CLI: seqio warns on every task
  return settle(cfg, epath.Path(workdir), task, upstream)


def settle(cfg: ml_collections.ConfigDict, workdir: epath.Path, task: Task,
           upstream: tuple[Status, ...] = ()) -> Status:
  """Stops, skips or runs the task's stage (under its lease); what became of it."""
  start = time.perf_counter()
  done = runner.StatusContext(cfg, workdir)  # all the checks and stopped rows read
  stop = next((status.stop for status in upstream if status.stop is not None), None)
  if stop is not None:
    if isinstance(task.stage, grid.Evaluate):
      runner.write_stopped_row(done, task.stage, stop, "an earlier stage failed")
    return Status("stopped", stop)
  if _complete(done, task):
    return Status("skipped")
  with _lease(workdir, task) as lease:
    if _complete(done, task):  # another driver completed it while this task waited
      return Status("skipped")
    error = runner.attempt(task.label, runner.Summary(), _run_stage, cfg, workdir, task)
  took_over = lease.took_over.owner if lease.took_over else None
  wall_s = time.perf_counter() - start
  if error is None:
    return Status("ran", wall_s=wall_s, took_over=took_over)
  stopped = runner.Stopped(task.kind, _portable(error))
  if isinstance(task.stage, grid.Evaluate):
    runner.write_stopped_row(done, task.stage, stopped, "evaluation failed")
  return Status("diverged" if stopped.diverged else "failed", stopped, wall_s, took_over)


def _complete(done: runner.StatusContext, task: Task) -> bool:
  if task.stop_at is not None:
    return not stages.train_missing(done.cfg, done.workdir, task.stage, up_to=task.stop_at)
  return runner.KINDS[type(task.stage)].complete(done, task.stage)


def _run_stage(cfg: ml_collections.ConfigDict, workdir: epath.Path, task: Task) -> None:
  ctx = _context(cfg, workdir)  # inside the attempt: a worker whose devices cannot hold
  if task.stop_at is not None:  # the mesh fails the stage, saying why
    stages.run_train(ctx, task.stage, task.label, stop_at=task.stop_at)
  else:
    runner.KINDS[type(task.stage)].run(ctx, task.stage, task.label)


def _lease(workdir: epath.Path, task: Task) -> lease_lib.Lease:
  """The stage's lease, once no live driver (or earlier attempt of this task) holds it."""
  taken = lease_lib.take_when_free(
      workdir, task.stage.key, runner.poll_s(),
      on_wait=lambda holder: print(f"{task.label}  (waits on the lease of {holder})", flush=True))
  if taken.took_over:
    print(f"{task.label}  (takes over the stale lease of {taken.took_over})", flush=True)
  return taken


_contexts: dict[tuple[str, str], stages.Context] = {}  # per worker process: built once


def _context(cfg: ml_collections.ConfigDict, workdir: epath.Path) -> stages.Context:
  key = (os.fspath(workdir), grid.stable_hash(cfg.to_dict()))
  if key not in _contexts:
    _contexts[key] = runner.build_context(cfg, workdir, runner.check(cfg))
  return _contexts[key]


def _portable(error: Exception) -> Exception:
  """An error the driver can unpickle: Diverged as itself (its step goes in the rows),
  any other as its type and message."""
  if isinstance(error, train.Diverged):
    return error
  return RuntimeError(f"{type(error).__name__}: {error}")
