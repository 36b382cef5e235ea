"""Where a run's time goes: start-up, compilation, input pipeline, train steps,
checkpoints, evaluation, decoding, the report.

Phases nest, and each second is counted once, in the innermost phase open at the time
(a checkpoint restored inside a stage counts as checkpoint time, not as the stage's).
Compilation is not a phase anyone opens: JAX reports each trace, lowering and XLA
compile (or persistent-cache read) through `jax.monitoring`, and those seconds move from
whatever phase was open to "compile". Dispatch is asynchronous, so a step's device time
lands where the host next waits for it (the loss check, a checkpoint's copy); the
train-steps figure is short by at most a step or two per stage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

import jax

COMPILE = "compile"
ORDER = ("start-up", COMPILE, "input", "train steps", "checkpoints", "evaluation",
         "decoding", "report", "other")
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


@dataclasses.dataclass
class _Open:
  name: str
  start: float
  inner_s: float = 0.0  # seconds already counted elsewhere (nested phases, compiles)


class Breakdown:
  """Exclusive seconds per phase, for one process."""

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self._open: list[_Open] = []

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    opened = _Open(name, time.perf_counter())
    self._open.append(opened)
    try:
      yield
    finally:
      self._open.pop()
      elapsed = time.perf_counter() - opened.start
      self._add(name, elapsed - opened.inner_s)
      if self._open:
        self._open[-1].inner_s += elapsed

  def compiled(self, seconds: float) -> None:
    """JAX spent `seconds` compiling inside whatever phase is open."""
    self._add(COMPILE, seconds)
    if self._open:
      self._open[-1].inner_s += seconds

  def _add(self, name: str, seconds: float) -> None:
    self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

  def total_s(self) -> float:
    return sum(self.seconds.values())

  def line(self) -> str:
    """e.g. 'time: train steps 151 s (40%), compile 80 s (21%), ...', largest first."""
    total = self.total_s() or 1.0
    named = sorted(self.seconds.items(), key=lambda kv: (-kv[1], _rank(kv[0])))
    parts = [f"{name} {s:,.0f} s ({100 * s / total:.0f}%)" for name, s in named if s >= 0.5]
    return "time: " + (", ".join(parts) or "nothing measured")


def _rank(name: str) -> int:
  return ORDER.index(name) if name in ORDER else len(ORDER)


_current: Breakdown | None = None


def _on_jax_event(event: str, duration_s: float, **_) -> None:
  if _current is not None and event in _COMPILE_EVENTS:
    _current.compiled(duration_s)


_listening = False


@contextlib.contextmanager
def measure() -> Iterator[Breakdown]:
  """Collects the breakdown of what runs inside (the phases opened with `phase`)."""
  global _current, _listening
  if not _listening:  # JAX keeps listeners for the process's life: register one, once
    jax.monitoring.register_event_duration_secs_listener(_on_jax_event)
    _listening = True
  outer, _current = _current, Breakdown()
  try:
    with _current.phase("other"):
      yield _current
  finally:
    _current = outer


def phase(name: str):
  """Counts the time inside as `name` when a breakdown is being measured."""
  return _current.phase(name) if _current is not None else contextlib.nullcontext()


def timed_iterator(iterator: Iterator, name: str = "input") -> Iterator:
  """The same items, the time spent producing each counted as `name`."""
  while True:
    with phase(name):
      try:
        item = next(iterator)
      except StopIteration:
        return
    yield item
