"""Stage leases: one driver at a time per stage, live while its heartbeat runs, taken over
once stale; and two drivers on one workdir run every stage exactly once between them."""
import collections
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
import test_remote_paths

from scaling import lease as lease_lib
from scaling import results

TIMEOUT = 2.0
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _take(workdir, key="stage"):
  return lease_lib.take(workdir, key, timeout=TIMEOUT)


def test_lease_is_exclusive(tmp_path):
  first = _take(tmp_path)
  assert isinstance(first, lease_lib.Lease) and first.took_over is None
  second = _take(tmp_path)
  assert isinstance(second, lease_lib.Holder) and second.age_s < TIMEOUT
  assert second.owner.startswith(f"{os.uname().nodename}:{os.getpid()}:")
  assert isinstance(_take(tmp_path, "other stage"), lease_lib.Lease)
  first.release()


def test_heartbeat_keeps_the_lease_live(tmp_path):
  with _take(tmp_path) as held:
    time.sleep(2 * TIMEOUT)
    holder = _take(tmp_path)
    assert isinstance(holder, lease_lib.Holder) and holder.age_s < TIMEOUT
    assert not held.lost


def test_stale_lease_is_taken_over(tmp_path):
  hung = _take(tmp_path)
  hung._stop.set()  # a driver that hangs: no more heartbeats
  hung._thread.join()
  time.sleep(TIMEOUT + 0.5)
  with _take(tmp_path) as successor:
    assert isinstance(successor, lease_lib.Lease)
    assert successor.took_over.owner == hung.store.owner
    assert successor.took_over.age_s > TIMEOUT
    assert not hung.store.beat()  # the hung driver, woken, learns that it lost the lease
    hung.release()  # ... and its release leaves the successor's lease in place
    assert isinstance(_take(tmp_path), lease_lib.Holder)
  assert not list(lease_lib.folder(tmp_path).iterdir())


def test_the_lease_of_a_killed_process_on_this_host_is_taken_at_once(tmp_path):
  killed = subprocess.run(
      [sys.executable, "-c", "import sys; from scaling import lease; "
       "l = lease.take(sys.argv[1], 'stage'); print(l.store.owner)", str(tmp_path)],
      capture_output=True, text=True, check=True).stdout.strip()  # exits holding it
  holder = lease_lib.take(tmp_path, "stage", timeout=3600)
  assert isinstance(holder, lease_lib.Lease) and holder.took_over.owner == killed
  holder.release()


def test_a_live_process_keeps_its_lease(tmp_path):
  with subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from scaling import lease; "
       "l = lease.take(sys.argv[1], 'stage'); print('held', flush=True); time.sleep(60)",
       str(tmp_path)], stdout=subprocess.PIPE, text=True) as live:
    try:
      assert live.stdout.readline().strip() == "held"
      assert isinstance(lease_lib.take(tmp_path, "stage", timeout=3600), lease_lib.Holder)
    finally:
      live.kill()
  assert isinstance(lease_lib.take(tmp_path, "stage", timeout=3600), lease_lib.Lease)


def test_release_frees_the_stage_at_once(tmp_path):
  _take(tmp_path).release()
  assert not (lease_lib.folder(tmp_path) / "stage.json").exists()
  again = _take(tmp_path)
  assert isinstance(again, lease_lib.Lease) and again.took_over is None
  again.release()


def test_object_store_lease_best_effort(tmp_path, monkeypatch):
  """gs:// (no exclusive create): a holder is seen, a stale lease is taken over."""
  monkeypatch.setattr(lease_lib, "_SETTLE_S", 0.0)
  monkeypatch.chdir(tmp_path)  # a write that missed the bucket would create ./gs:/ here
  with test_remote_paths.MemoryBucket().mounted() as bucket:
    first = _take(test_remote_paths.BUCKET)
    assert isinstance(first.store, lease_lib._ObjectStore)
    assert isinstance(_take(test_remote_paths.BUCKET), lease_lib.Holder)
    first._stop.set()  # hung
    first._thread.join()
    time.sleep(TIMEOUT + 0.5)
    with _take(test_remote_paths.BUCKET) as successor:
      assert successor.took_over.owner == first.store.owner
      assert not first.store.beat()
      first.release()
    assert not [f for f in bucket.files if "/leases/" in f]
  assert not list(tmp_path.iterdir()), "a lease write missed the bucket"


CONFIG = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_study_e2e import micro_config

def get_config():
  cfg = micro_config()
  cfg.grid.D_p = (1500,)
  cfg.grid.D_f = ()   # two training runs, each evaluated directly: 4 stages
  cfg.eval.update(max_examples=8)
  return cfg
"""


def _driver(config, workdir) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu", **{lease_lib.TIMEOUT_ENV: str(TIMEOUT)})
  return subprocess.Popen(
      [sys.executable, "-m", "scaling", "run", "--config", str(config), "--workdir",
       str(workdir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _started(log: str) -> list[str]:
  """The stages a driver ran: their '[i/n] kind ...' line, printed alone as each starts."""
  return [line for line in log.splitlines() if re.fullmatch(r"\[\d+/\d+\] \w+( \S+)+", line)]


@pytest.mark.slow
def test_two_drivers_run_every_stage_once(tmp_path):
  config = tmp_path / "study.py"
  config.write_text(CONFIG)
  drivers = [_driver(config, tmp_path / "w") for _ in range(2)]
  logs = [d.communicate(timeout=900)[0] for d in drivers]
  for i, log in enumerate(logs):
    (tmp_path / f"driver{i}.log").write_text(log)
  for driver, log in zip(drivers, logs):
    assert driver.returncode == 0, log[-3000:]
  runs = collections.Counter(line for log in logs for line in _started(log))
  assert len(runs) == 4 and set(runs.values()) == {1}, (runs, logs)
  ran = [int(re.search(r"done: (\d+) stages ran", log).group(1)) for log in logs]
  assert sum(ran) == 4, logs
  frame = results.load(tmp_path / "w")
  assert len(frame) == 2 and set(frame["status"]) == {"ok"}
  assert not list(lease_lib.folder(tmp_path / "w").iterdir())
