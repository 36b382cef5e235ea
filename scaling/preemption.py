"""Stopping a study cleanly when its machine is about to be taken away.

A preempted process gets SIGTERM and a short grace period. While a training loop
runs, the notice is answered at the next step boundary: pretraining saves a periodic
checkpoint there and waits for it; then the process exits with EXIT_CODE, and the
same command run again resumes mid-stage. Outside a training loop the process exits
at once: every other stage is all-or-nothing and starts over.

Who hears the notice:
* one process (no jax.distributed client): this module's SIGTERM handler;
* a multi-host run: JAX's preemption service, which catches SIGTERM itself (and TPU
  maintenance notices); every host asks its sync point at each step, so all hosts
  stop at the same step. Replacing its handler with ours would deafen it.
"""
from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import jax

# sysexits.h EX_TEMPFAIL: a temporary failure; the same command should be run again.
EXIT_CODE = 75


class Preempted(SystemExit):
  """Ends the process after a preemption notice, with EXIT_CODE. A SystemExit, so no
  `except Exception` (e.g. the runner's per-stage containment) swallows it."""

  def __init__(self, where: str):
    super().__init__(EXIT_CODE)
    self.where = where


class _Notice:
  heard = False        # a SIGTERM arrived (single process)
  deferring = 0        # > 0 inside a training stage: answer at the next step boundary


def install() -> bool:
  """Catches SIGTERM in a single-process run; returns whether it did. Call once,
  after jax.distributed is (or is not) initialised."""
  if jax.distributed.is_initialized():
    return False  # JAX's preemption service listens; see the module docstring
  signal.signal(signal.SIGTERM, _on_sigterm)
  return True


def _on_sigterm(signum, frame) -> None:
  del signum, frame
  _Notice.heard = True
  if not _Notice.deferring:
    raise Preempted("SIGTERM outside training")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """A stage whose training loop checks `reached` at every step: a SIGTERM inside
  waits for that check; one that arrives after the loop ends the process on exit."""
  _Notice.deferring += 1
  try:
    yield
  finally:
    _Notice.deferring -= 1
  if _Notice.heard and not _Notice.deferring:
    raise Preempted("SIGTERM after training")


def reached(step: int) -> bool:
  """Whether to stop after training step `step`: a SIGTERM was heard here, or every
  host of a multi-host run reached JAX's preemption sync point. Call it at every
  step of a loop, on every host (the sync point counts steps)."""
  if _Notice.heard:
    return True
  if not jax.distributed.is_initialized():
    return False
  from jax.experimental import multihost_utils
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
    return False


def stop_if_reached(step: int, where: str) -> None:
  """For loops with nothing worth saving mid-way (cooldowns, finetunes)."""
  if reached(step):
    raise Preempted(where)
