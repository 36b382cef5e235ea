"""Multi-host for real: two JAX processes on this machine (4 virtual CPU devices each,
gloo collectives) run a micro study and write the same rows, to float tolerance, as
one process with 8 devices. Each process reads only its own input shards."""
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from scaling import results

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_study_e2e import micro_config

def get_config():
  cfg = micro_config()
  cfg.grid.mixture = ("aligned",)
  cfg.grid.D_p = (1500,)
  cfg.eval.update(max_examples=8)
  cfg.data.input_shards = 2   # the same data order for one process and for two
  return cfg
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run(config, workdir, devices: int, *extra: str) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      [sys.executable, "-m", "scaling", "run", "--config", str(config), "--workdir",
       str(workdir), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _finish(proc: subprocess.Popen) -> str:
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-3000:]
  return out


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  config = tmp_path / "study.py"
  config.write_text(CONFIG)
  single = _run(config, tmp_path / "one", 8)
  _finish(single)
  address = f"localhost:{_free_port()}"
  procs = [_run(config, tmp_path / "two", 4, "--coordinator_address", address,
                "--num_processes", "2", "--process_id", str(i)) for i in range(2)]
  logs = [_finish(p) for p in procs]
  assert "done: 3 stages ran" in logs[0] and "done: 3 stages ran" in logs[1]
  one, two = results.load(tmp_path / "one"), results.load(tmp_path / "two")
  assert list(one["key"]) == list(two["key"]) and len(one) == 1
  for column in ("D_p_seen", "D_f_seen", "flops", "N"):
    assert list(one[column]) == list(two[column]), column
  for column in ("ce", "bleu", "chrf"):
    assert two[column].to_numpy() == pytest.approx(one[column].to_numpy(), rel=1e-4, abs=1e-3), column


def test_unreachable_coordinator_is_named_and_times_out(tmp_path):
  config = tmp_path / "study.py"
  config.write_text(CONFIG)
  address = f"localhost:{_free_port()}"
  proc = _run(config, tmp_path / "w", 4, "--coordinator_address", address,
              "--num_processes", "2", "--process_id", "1", "--distributed_timeout", "5")
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 3, out[-2000:]
  assert f"distributed error: could not join {address} within 5 s" in out
  assert not (tmp_path / "w").exists()
