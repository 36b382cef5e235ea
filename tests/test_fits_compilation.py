"""Compiled kernels that outlive the process: where they go, that nothing overrides a cache folder
someone else chose, the opt-out, and a second process that loads instead of compiling."""
import json
import os
import subprocess
import sys

import jax
import pytest

from fits import compilation, laws

# A fresh process fits a small law and reports what it compiled and where the caches went.
_CHILD = """
import json, jax, numpy as np
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **kw: compiles.append(kw.get("fun_name"))
    if event == "/jax/core/compile/backend_compile_duration" else None)
if {preset!r}:
    jax.config.update("jax_compilation_cache_dir", {preset!r})
import fits
x = np.logspace(6, 9, 6)
res = fits.fit("power_law", x, 1.5 + 300 * x ** -0.3, starts=4)
print(json.dumps({{"compiles": compiles, "jax_folder": jax.config.jax_compilation_cache_dir,
                   "alpha": res.params["alpha"]}}))
"""


def _child(tmp_path, setting, preset=""):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(FITS_COMPILATION_CACHE=setting, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    done = subprocess.run([sys.executable, "-c", _CHILD.format(preset=preset)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stored(folder):
    where = os.path.join(folder, "fits-executables")
    return sorted(os.listdir(where)) if os.path.isdir(where) else []


@pytest.mark.slow
def test_a_second_process_loads_the_kernels_instead_of_compiling(tmp_path):
    folder = str(tmp_path / "cache")
    first = _child(tmp_path, folder)
    assert first["jax_folder"] == folder and first["compiles"]
    assert _stored(folder)
    second = _child(tmp_path, folder)
    assert second["compiles"] == [] and second["alpha"] == first["alpha"]


def test_user_folder_unless_someone_chose_one_or_it_is_off(monkeypatch, tmp_path):
    chosen = jax.config.jax_compilation_cache_dir
    monkeypatch.delenv(compilation.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert compilation._configure() == str(tmp_path / "fits" / "jax")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "fits" / "jax")
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "study"))
        assert compilation._configure() == str(tmp_path / "study")  # never replaced
        monkeypatch.setenv(compilation.ENV, "off")
        assert compilation._configure() is None
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "study")
    finally:
        jax.config.update("jax_compilation_cache_dir", chosen)


def test_a_folder_set_before_the_first_fit_is_kept(tmp_path):
    study = str(tmp_path / "study")
    out = _child(tmp_path, str(tmp_path / "ignored"), preset=study)
    assert out["jax_folder"] == study and _stored(study)
    assert not os.path.exists(tmp_path / "ignored")


def test_off_stores_nothing(tmp_path):
    out = _child(tmp_path, "off")
    assert out["jax_folder"] is None and not os.path.exists(tmp_path / "xdg")


def test_only_laws_defined_in_fits_can_be_stored():
    law = laws.get("sigmoid_link")
    assert "sigmoid_link" in compilation.law_identity(law)
    assert compilation.law_identity(
        laws.Law(name="mine", param_names=("a",), input_names=("x",), latex="$a$",
                 model=lambda p, xs, xp: p[0] + 0 * xs[0], positive=(False,),
                 grid={"a": (1.0,)})) is None
