"""Stage leases: however many drivers share a workdir, one at a time runs a given stage.

    <workdir>/leases/<stage key>.json   {"owner": "host:pid:id", "key": ..., "taken": time}

A driver takes a stage's lease before running it and releases it after the stage completed
or failed; meanwhile a thread refreshes the lease's heartbeat every few seconds (timeout/4,
at most 5 s). A lease whose heartbeat is older than the timeout (env SCALING_LEASE_TIMEOUT_S,
default 60 s) belongs to a driver that died or hung: another driver may take it over. So
does a lease whose owner ran on this host and whose process is gone (a driver killed, then
started again, takes its stages back at once instead of after the timeout).

Local and NFS workdirs: the lease is created with O_CREAT|O_EXCL (exactly one creator wins),
the heartbeat is the file's mtime (futimens on the creator's open descriptor, so a driver
that lost its lease can never refresh its successor's), and a takeover renames the stale file
aside, checks that what it moved is the inode it judged stale and still is, and only then
creates afresh (a lease moved by mistake is linked back).

Object stores (gs:// and the like) have no exclusive create in etils.epath: there the lease
is best-effort (write, then read back after a pause; the last writer wins and the others
back off), and the heartbeat is a time inside the file. Ages compare clocks across hosts:
keep them NTP-synced, far within the timeout.

A driver whose stage outlives a takeover (it stalled past the timeout, then woke) is told
by its heartbeat thread that the lease is lost; it cannot be stopped mid-stage, but rows
are written atomically, so the results store holds one whole row either way.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Callable

from etils import epath

TIMEOUT_ENV = "SCALING_LEASE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 60.0
_SETTLE_S = 0.5  # object stores: how long a writer waits before reading its lease back


def timeout_s() -> float:
  return float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)


def folder(workdir: epath.PathLike) -> epath.Path:
  return epath.Path(workdir) / "leases"


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lease, and how long ago it last showed a sign of life."""
  owner: str
  age_s: float

  def __str__(self) -> str:
    return f"{self.owner} (heartbeat {self.age_s:.0f} s ago)"

  @property
  def gone(self) -> bool:
    """Whether the owner was a process on this host that no longer runs."""
    host, _, rest = self.owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
      return False
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      return True
    except PermissionError:  # alive, someone else's
      return False
    return False


class Lease:
  """A lease this driver holds: a thread keeps it live until `release()`."""

  def __init__(self, store: "_Store", timeout: float, took_over: Holder | None):
    self.store, self.took_over, self.lost = store, took_over, False
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, args=(min(timeout / 4, 5.0),), daemon=True)
    self._thread.start()

  def _beat(self, interval: float) -> None:
    while not self._stop.wait(interval):
      if not self.store.beat():
        self.lost = True
        print(f"lease {self.store.path.name} lost: another driver took it over "
              "(this one stalled past the timeout)", flush=True)
        return

  def release(self) -> None:
    self._stop.set()
    self._thread.join()
    self.store.remove()

  def __enter__(self) -> "Lease":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def take(workdir: epath.PathLike, key: str, timeout: float | None = None) -> Lease | Holder:
  """The stage's lease, taken now (over a stale holder if need be), or its live holder."""
  timeout = timeout_s() if timeout is None else timeout
  path = folder(workdir) / f"{key}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
  store = (_ObjectStore if "://" in os.fspath(path) else _LocalStore)(path, owner, key)
  for _ in range(3):  # a holder may vanish between looking and taking: look again
    if store.create():
      return Lease(store, timeout, None)
    holder = store.holder()
    if holder is None:
      continue
    gone = holder.gone
    if holder.age_s <= timeout and not gone:
      return holder
    if store.take_over(timeout, holder.owner if gone else None):
      return Lease(store, timeout, holder)
  return store.holder() or Holder("unknown", 0.0)


def take_when_free(workdir: epath.PathLike, key: str, poll_s: float,
                   on_wait: Callable[[Holder], None] | None = None) -> Lease:
  """The stage's lease, once no live driver holds it (looked at every `poll_s` seconds);
  `on_wait` hears of each new holder met while waiting."""
  said = None
  while isinstance(taken := take(workdir, key), Holder):
    if on_wait is not None and said != taken.owner:
      said = taken.owner
      on_wait(taken)
    time.sleep(poll_s)
  return taken


class _Store:
  def __init__(self, path: epath.Path, owner: str, key: str):
    self.path, self.owner = path, owner
    self.text = json.dumps({"owner": owner, "key": key, "taken": time.time()})

  def _owner_in(self, text: str) -> str:
    try:
      return json.loads(text)["owner"]
    except (ValueError, KeyError, TypeError):  # being written, or not a lease
      return "unknown"


class _LocalStore(_Store):
  fd: int | None = None

  def create(self) -> bool:
    try:
      self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    os.write(self.fd, self.text.encode())
    return True

  def holder(self) -> Holder | None:
    try:
      return Holder(self._owner_in(self.path.read_text()),
                    time.time() - os.stat(self.path).st_mtime)
    except FileNotFoundError:
      return None

  def take_over(self, timeout: float, gone_owner: str | None = None) -> bool:
    """Moves the stale lease (or the one of `gone_owner`, a dead process) aside and
    creates ours; False if someone beat us to it."""
    aside = f"{self.path}.{self.owner.rsplit(':', 1)[1]}.stale"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    if gone_owner is not None:
      still_stale = self._owner_in(pathlib.Path(aside).read_text()) == gone_owner
    else:
      still_stale = time.time() - os.stat(aside).st_mtime > timeout
    if not still_stale:  # a fresh one, or it woke: put back
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
      os.remove(aside)
      return False
    os.remove(aside)
    return self.create()

  def beat(self) -> bool:
    os.utime(self.fd)
    return self._ours()

  def _ours(self) -> bool:
    try:
      return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
    except FileNotFoundError:
      return False

  def remove(self) -> None:
    if self._ours():
      os.remove(self.path)
    os.close(self.fd)


class _ObjectStore(_Store):
  """Best-effort: an object store offers no exclusive create through etils.epath."""

  def create(self) -> bool:
    return not self.path.exists() and self._write_and_confirm()

  def _write_and_confirm(self) -> bool:
    self.path.write_text(self._stamped())
    time.sleep(_SETTLE_S)  # a rival writing at the same moment: the last writer wins
    return self._ours()

  def _stamped(self) -> str:
    return json.dumps(dict(json.loads(self.text), heartbeat=time.time()))

  def holder(self) -> Holder | None:
    try:
      record = json.loads(self.path.read_text())
      return Holder(record["owner"], time.time() - float(record["heartbeat"]))
    except FileNotFoundError:
      return None
    except (ValueError, KeyError, TypeError):
      return Holder("unknown", 0.0)

  def take_over(self, timeout: float, gone_owner: str | None = None) -> bool:
    return self._write_and_confirm()

  def beat(self) -> bool:
    if not self._ours():
      return False
    self.path.write_text(self._stamped())
    return True

  def _ours(self) -> bool:
    try:
      return self._owner_in(self.path.read_text()) == self.owner
    except FileNotFoundError:
      return False

  def remove(self) -> None:
    if self._ours():
      self.path.unlink(missing_ok=True)
