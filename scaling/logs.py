"""What a training run reports while it runs: throughput, TensorBoard and JSONL records,
progress bars.

Each training stage logs under the workdir, beside its checkpoints' kind:

    <workdir>/logs/<pretrain|cooldown|finetune>/<stage key>/
        events.out.tfevents.<time>.<host>   TensorBoard scalars (one file per attempt)
        metrics.jsonl                       the same records, one JSON object per line

A record is taken every `log_every` steps and at the end of a run: step, tokens,
wall_s, loss, grad_norm, learning_rate, tokens_per_s and mfu (null without a measured
peak; non-finite values are written as null in the JSONL). Every file is written
through etils.epath, so a gs:// workdir logs like a local one.

On a terminal each stage draws a tqdm bar with its ETA (and the runner one for the
grid); otherwise the same records are printed as plain lines.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import jax
import tqdm
from etils import epath
from tensorboardX import record_writer
from tensorboardX.proto import event_pb2
from tensorboardX.proto import summary_pb2
from tqdm.contrib import DummyTqdmFile

SCALARS = ("loss", "grad_norm", "learning_rate", "tokens_per_s", "mfu")
JSONL = "metrics.jsonl"
# Remote files re-upload on every flush, so records are flushed at most this often
# (and always when the stage ends).
FLUSH_S = 10.0

# The real stdout while `bars_above_prints` routes prints through tqdm.
_terminal: TextIO | None = None


def on_terminal() -> bool:
  """Whether progress is drawn as bars: only when stdout is a terminal."""
  return sys.stdout.isatty()


@contextlib.contextmanager
def bars_above_prints() -> Iterator[None]:
  """On a terminal, sends every print through `tqdm.write`, so lines scroll above
  the bars instead of breaking them."""
  global _terminal
  if not on_terminal() or _terminal is not None:
    yield
    return
  _terminal = sys.stdout
  try:
    with contextlib.redirect_stdout(DummyTqdmFile(_terminal)):
      yield
  finally:
    _terminal = None


def bar(**kwargs) -> tqdm.tqdm:
  return tqdm.tqdm(file=_terminal or sys.stdout, dynamic_ncols=True, **kwargs)


@dataclasses.dataclass
class Throughput:
  """Tokens and FLOPs per second since the last reading; MFU against a measured peak."""
  peak_flops: float | None = None
  _start: float = dataclasses.field(default_factory=time.perf_counter)
  _tokens: int = 0
  _flops: float = 0.0

  def add(self, tokens: int, flops: float) -> None:
    self._tokens += tokens
    self._flops += flops

  def read(self) -> dict[str, float | None]:
    """tokens_per_s and mfu since the last reading, which starts the next window."""
    seconds = max(time.perf_counter() - self._start, 1e-9)
    mfu = self._flops / seconds / self.peak_flops if self.peak_flops else None
    rates = dict(tokens_per_s=self._tokens / seconds, mfu=mfu)
    self._start, self._tokens, self._flops = time.perf_counter(), 0, 0.0
    return rates


class _RecordFile(record_writer.RecordWriter):
  """tensorboardX's TFRecord framing (length, masked CRC32C) over a file opened through
  epath, rather than the local or GCS-client file it would open itself."""

  def __init__(self, file):  # pylint: disable=super-init-not-called
    self._writer = file


class EventFile:
  """A TensorBoard event file of scalar summaries."""

  def __init__(self, folder: epath.Path):
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"
    self._records = _RecordFile((folder / name).open("wb"))
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def scalars(self, step: int, values: dict[str, float | None]) -> None:
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=value)
        for tag, value in values.items() if value is not None])
    self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def flush(self) -> None:
    self._records.flush()

  def close(self) -> None:
    self._records.close()


class JsonLines:
  """One JSON object per line. A resumed stage goes on in the same file: its earlier
  lines are carried over, as not every filesystem (gs://) can append."""

  def __init__(self, path: epath.Path):
    earlier = path.read_text() if path.exists() else ""
    self._file = path.open("w")
    self._file.write(earlier)

  def write(self, record: dict[str, Any]) -> None:
    self._file.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n")

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _finite_or_none(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class StageFiles:
  """A stage's log folder: its TensorBoard event file and its JSONL, flushed at most
  every FLUSH_S seconds and when closed."""

  def __init__(self, folder: epath.Path):
    folder.mkdir(parents=True, exist_ok=True)
    self.events, self.jsonl = EventFile(folder), JsonLines(folder / JSONL)
    self._flushed = time.perf_counter()

  def write(self, record: dict[str, Any]) -> None:
    self.events.scalars(record["step"], {k: record.get(k) for k in SCALARS})
    self.jsonl.write(record)
    if time.perf_counter() - self._flushed >= FLUSH_S:
      self.events.flush()
      self.jsonl.flush()
      self._flushed = time.perf_counter()

  def close(self) -> None:
    try:
      self.events.close()
    finally:
      self.jsonl.close()


class Progress:
  """A training stage's progress: a record every `every` steps and at the end (written
  to `folder`, when given, as TensorBoard scalars and JSONL), drawn as a tqdm bar on a
  terminal and printed as plain lines otherwise. The bar counts tokens when
  `total_tokens` is the stage's end, steps otherwise. `show=False` (on every process
  but the first) shows nothing."""

  def __init__(self, label: str, every: int, *, folder: epath.Path | None = None,
               total_steps: int | None = None, total_tokens: int | None = None,
               peak_flops: float | None = None, show: bool = True,
               interactive: bool | None = None,
               select: Callable[[dict], dict] | None = None):
    self.label, self.every, self.show = label, every, show
    self.select = select  # the metrics to record, from those fetched (a group member's)
    self.total_steps, self.total_tokens = total_steps, total_tokens
    self.throughput = Throughput(peak_flops)
    self.interactive = show and (on_terminal() if interactive is None else interactive)
    self._files = StageFiles(folder) if folder is not None else None
    self._bar: tqdm.tqdm | None = None
    self._eta = _Eta()
    self._last: tuple[Any, dict] | None = None   # the newest update not yet recorded
    self._latest: dict | None = None             # the newest record

  def due(self, step: int) -> bool:
    return step % self.every == 0

  def update(self, counters, metrics: dict, tokens: int, flops: float) -> None:
    """After each update; reads the device (to record) only when a record is due."""
    self.throughput.add(tokens, flops)
    done, total = self._done_and_total(counters)
    self._eta.update(done, total)
    if self.interactive:
      self._draw(done - (tokens if self.total_tokens else 1), done, total)
    self._last = (dataclasses.replace(counters), metrics)
    if self.due(counters.step):
      self._record()

  def close(self) -> None:
    """Records the last update (if not yet recorded) and closes the files and bar; a
    bar leaves the final record behind as a line."""
    try:
      if self._last is not None:
        self._record()
    finally:
      if self._files is not None:
        self._files.close()
      if self._bar is not None and self._latest is not None:
        self._bar.close()
        print(f"{self.label}  {_line(self._latest, self.total_steps)}", flush=True)

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, exc_type, *exc_info) -> None:
    if exc_type is None:
      self.close()
      return
    # The error in flight says more than one met while recording the last update.
    with contextlib.suppress(Exception):
      self.close()

  def _done_and_total(self, counters) -> tuple[int, int | None]:
    if self.total_tokens:
      return counters.tokens, self.total_tokens
    return counters.step, self.total_steps

  def _draw(self, before: int, done: int, total: int | None) -> None:
    if self._bar is None:
      unit = "tok" if self.total_tokens else "step"
      self._bar = bar(desc=self.label, total=total, initial=before, unit=unit,
                      unit_scale=bool(self.total_tokens), leave=False)
    self._bar.update(done - self._bar.n)

  def _record(self) -> None:
    counters, metrics = self._last
    self._last = None
    fetched = jax.device_get(metrics)
    values = {k: float(v) for k, v in (self.select or dict)(fetched).items()}
    record = dict(step=counters.step, tokens=counters.tokens, wall_s=counters.wall_s,
                  **values, **self.throughput.read())
    self._latest = record
    if self._files is not None:
      self._files.write(record)
    if self.interactive:
      self._bar.set_postfix_str(_short(record), refresh=False)
    elif self.show:
      print(f"{self.label}  {_line(record, self.total_steps)}{self._eta.text()}", flush=True)


class GroupProgress:
  """The progress of a train.TrainerGroup: each member's records in its own folder (its
  metrics are its slice of the group's), and one line or bar for the group, with the
  group's throughput and its members' mean metrics. Used as a Progress is."""

  def __init__(self, shown: Progress, members: list[Progress]):
    self.shown, self.members = shown, members

  @classmethod
  def build(cls, label: str, every: int, folders: list[epath.Path | None], *,
            show: bool = True, **kwargs) -> "GroupProgress":
    members = [Progress(label, every, folder=folder, show=False, select=_member(i), **kwargs)
               for i, folder in enumerate(folders)]
    shown = Progress(label, every, show=show, select=_mean, **kwargs)
    return cls(shown, members)

  def due(self, step: int) -> bool:
    return self.shown.due(step)

  def update(self, counters, metrics: dict, tokens: int, flops: float) -> None:
    """`tokens` and `flops` are one member's."""
    if self.shown.due(counters.step):  # every member records now: one fetch for all
      metrics = jax.device_get(metrics)
    for member in self.members:
      member.update(counters, metrics, tokens, flops)
    n = len(self.members)
    self.shown.update(counters, metrics, tokens * n, flops * n)

  def close(self) -> None:
    try:
      for member in self.members:
        member.close()
    finally:
      self.shown.close()

  def __enter__(self) -> "GroupProgress":
    return self

  def __exit__(self, exc_type, *exc_info) -> None:
    for progress in (*self.members, self.shown):
      progress.__exit__(exc_type, *exc_info)


def _member(i: int) -> Callable[[dict], dict]:
  return lambda fetched: {k: v[i] for k, v in fetched.items()}


def _mean(fetched: dict) -> dict:
  return {k: v.mean() for k, v in fetched.items()}


def _rates(record: dict) -> str:
  mfu = f"  MFU {100 * record['mfu']:.1f}%" if record["mfu"] is not None else ""
  return f"{record['tokens_per_s']:,.0f} tok/s{mfu}"


def _short(record: dict) -> str:
  return f"loss {record['loss']:.3f}  {_rates(record)}"


def _line(record: dict, total_steps: int | None) -> str:
  of = f"/{total_steps}" if total_steps else ""
  return (f"step {record['step']}{of}  loss {record['loss']:.3f}  "
          f"grad norm {record['grad_norm']:.3g}  lr {record['learning_rate']:.3g}  "
          f"{_rates(record)}")


class _Eta:
  """The time left at the stage's mean rate so far (for the plain lines; tqdm keeps
  its own)."""

  def __init__(self):
    self._start: tuple[float, int] | None = None
    self._left_s: float | None = None

  def update(self, done: int, total: int | None) -> None:
    now = time.perf_counter()
    if self._start is None:  # the first update compiles: the rate starts after it
      self._start = (now, done)
      return
    rate = (done - self._start[1]) / max(now - self._start[0], 1e-9)
    self._left_s = (total - done) / rate if total and rate > 0 else None

  def text(self) -> str:
    if self._left_s is None:
      return ""
    return f"  ETA {tqdm.tqdm.format_interval(max(self._left_s, 0.0))}"
