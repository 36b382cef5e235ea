"""The workdir's XLA compilation cache: a stage's start fills it, a fit after it still works
(and keeps its executables beside JAX's), the opt-out and a user's own folder leave it out
(those two decided in this process: they compile nothing)."""
import json
import os
import subprocess
import sys

import jax
import pytest

from scaling import runner

# A fresh process starts a micro trainer the way a stage does, then maybe fits a law.
_CHILD = """
import json, sys, jax, numpy as np
from scaling import bench_cache
bench_cache.start_up("micro", 8, sys.argv[1])
out = {"folder": jax.config.jax_compilation_cache_dir}
if sys.argv[2] == "fit":
  import fits
  x = np.logspace(6, 9, 6)
  out["alpha"] = fits.fit("power_law", x, 1.5 + 300 * x ** -0.3, starts=4).params["alpha"]
print(json.dumps(out))
"""


def _child(tmp_path, fit: bool = False) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", runner.CACHE_ENV, "FITS_COMPILATION_CACHE")}
  env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "w"), "fit" if fit else ""],
                        env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def _files(folder) -> list[str]:
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_a_stage_start_fills_the_workdir_cache_and_a_fit_after_it_works(tmp_path):
  out = _child(tmp_path, fit=True)
  cache = tmp_path / "w" / "xla_cache"
  assert out["folder"] == str(cache)
  assert len([f for f in _files(cache) if f != "fits-executables"]) >= 2  # init and step
  assert _files(cache / "fits-executables")  # fits shares the folder the runner chose
  assert out["alpha"] == pytest.approx(0.3, rel=1e-3)
  assert not (tmp_path / "xdg" / "fits").exists()  # not fits' own user folder


def test_opt_out_leaves_the_workdir_without_a_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(runner.CACHE_ENV, "off")
  assert runner.use_compilation_cache(tmp_path / "w") is None
  assert not (tmp_path / "w" / "xla_cache").exists()


def test_a_folder_the_user_chose_is_kept(tmp_path, monkeypatch):
  monkeypatch.delenv(runner.CACHE_ENV, raising=False)
  before = jax.config.jax_compilation_cache_dir
  mine = str(tmp_path / "mine")
  jax.config.update("jax_compilation_cache_dir", mine)  # as JAX_COMPILATION_CACHE_DIR does
  try:
    assert runner.use_compilation_cache(tmp_path / "w") == mine
    assert jax.config.jax_compilation_cache_dir == mine
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
  assert not (tmp_path / "w" / "xla_cache").exists()
