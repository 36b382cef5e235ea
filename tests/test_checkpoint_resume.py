"""Checkpoints that survive preemption: a run stopped by SIGTERM resumes from its
periodic checkpoint and ends with the parameters of an uninterrupted run; an
unreadable latest checkpoint falls back to the one before; a checkpoint of another
model shape names the mismatch."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling import checkpoint
from scaling import config as config_lib
from scaling import grid
from scaling import mesh as mesh_lib
from scaling import preemption
from scaling import stages
from scaling import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the checkpoint module

def _tree(rows=2):
  return {"dense": {"kernel": jnp.arange(rows * 3.0).reshape(rows, 3)}, "bias": jnp.ones(3)}


def test_a_different_shape_names_item_path_and_both_shapes(tmp_path):
  checkpoint.save(tmp_path, 7, dict(model=_tree(rows=2)), dict(tokens=7))
  wanted = dict(model=dict(_tree(rows=4), extra=jnp.zeros(1)))
  with pytest.raises(ValueError) as error:
    checkpoint.restore(tmp_path, 7, wanted)
  message = str(error.value)
  assert "different model shape" in message and "item 'model'" in message
  assert "dense/kernel: saved (2, 3) vs expected (4, 3)" in message
  assert "extra: expected (1,), not in the checkpoint" in message


# orbax's failed read may leave a callback for its closed event loop: noise, not a failure
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["truncate arrays", "delete arrays", "delete meta item"])
def test_damaged_checkpoint_is_unreadable_and_can_be_set_aside(tmp_path, damage):
  checkpoint.save(tmp_path, 7, dict(model=_tree()), dict(tokens=7))
  _damage(tmp_path / "7", damage)
  with pytest.raises(checkpoint.Unreadable, match="/7"):
    checkpoint.restore(tmp_path, 7, dict(model=_tree()))
  aside = checkpoint.set_aside(tmp_path, 7)
  assert aside.name == "7.unreadable" and aside.exists()
  assert checkpoint.steps(tmp_path) == []


def _damage(step_dir: pathlib.Path, how: str) -> None:
  if how == "delete meta item":
    for f in sorted((step_dir / "meta").rglob("*"), reverse=True):
      f.unlink() if f.is_file() else f.rmdir()
    (step_dir / "meta").rmdir()
    return
  arrays = [f for f in (step_dir / "model").rglob("*") if f.is_file() and f.parent.name == "d"]
  assert arrays
  for f in arrays:
    if how == "truncate arrays":
      with open(f, "r+b") as handle:
        handle.truncate(5)
    else:
      f.unlink()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # as above
def test_a_checkpoint_just_saved_is_restored_from_memory_while_it_is_listed(tmp_path):
  tree = _tree()
  checkpoint.save(tmp_path, 7, dict(model=tree), dict(tokens=7))
  with pytest.raises(ValueError, match="different model shape"):  # another shape: the files
    checkpoint.restore(tmp_path, 7, dict(model=_tree(rows=4)), from_memory=True)
  _damage(tmp_path / "7", "delete arrays")  # the files are no longer read
  items, meta = checkpoint.restore(tmp_path, 7, dict(model=_tree()), from_memory=True)
  assert meta == dict(tokens=7) and checkpoint.read_meta(tmp_path, 7) == meta
  for got, want in zip(jax.tree.leaves(items["model"]), jax.tree.leaves(tree), strict=True):
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(got, want)
  with pytest.raises(checkpoint.Unreadable):  # without from_memory: the files
    checkpoint.restore(tmp_path, 7, dict(model=_tree()))
  checkpoint.set_aside(tmp_path, 7)  # no longer listed: nothing served from memory
  with pytest.raises(FileNotFoundError):
    checkpoint.restore(tmp_path, 7, dict(model=_tree()), from_memory=True)


def test_writer_saves_in_the_background_and_keeps_the_last_two(tmp_path):
  with checkpoint.Writer(tmp_path, keep=2) as writer:
    for step in (5, 10, 15):
      assert writer.save(step, dict(model=_tree()), dict(tokens=step))
    assert not writer.save(15, dict(model=_tree()), dict(tokens=15))  # once per step
  assert checkpoint.steps(tmp_path) == [10, 15]
  assert checkpoint.read_meta(tmp_path, 15) == {"tokens": 15}


def test_every_counts_steps_and_minutes():
  assert [s for s in range(1, 13) if checkpoint.Every(steps=5).due(s)] == [5, 10]
  assert not any(checkpoint.Every().due(s) for s in range(1, 50))
  late = checkpoint.Every(minutes=1.0, _since=time.monotonic() - 61)
  assert late.due(3)
  late.saved()
  assert not late.due(4)


# ---------------------------------------------------------------- resume choice and fallback

def _lm_config():
  cfg = config_lib.base_config()
  cfg.pretrain.update(objective="causal_lm", batch_size=8)
  cfg.mixtures = {"text": {"xa": 1.0}}
  cfg.grid.update(size=("lm_micro",), mixture=("text",), D_p=(1000, 2000, 3000))
  cfg.fits.curves = {"loss": config_lib.curve("power_law", ("D_p",), "loss")}
  config_lib.validate(cfg)
  return cfg


@pytest.fixture
def run_dir(tmp_path):
  """A training run's folder holding save point 1000 and periodic steps 15 and 20,
  each with its own parameters (filled with its step) and counters."""
  cfg = _lm_config()
  stage = grid.expand(cfg).trains[0]
  trainer = train.get_trainer(train.ModelConfig(stage.size),
                              train.StepConfig.from_section(cfg.pretrain),
                              mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1, fsdp=-1)))
  ctx = types.SimpleNamespace(cfg=cfg, workdir=tmp_path)
  folder = stages.stage_dir(tmp_path, stage)

  def save(directory, index, step, tokens):
    state = trainer.init(0)
    params = jax.tree.map(lambda p: jnp.full_like(p, step), state.model.params)
    model = train.ModelState(params, state.model.rest)
    meta = dict(step=step, tokens=tokens, flops=1.0, wall_s=1.0)
    checkpoint.save(directory, index, dict(model=model, optimizer=state.optimizer), meta)

  save(folder, 1000, step=9, tokens=1040)
  save(stages.periodic_dir(folder), 15, step=15, tokens=1700)
  save(stages.periodic_dir(folder), 20, step=20, tokens=2300)  # past the missing 2000
  return ctx, stage, trainer, folder


def _resumed_step(ctx, stage, trainer):
  state, counters = stages._resume(ctx, stage, trainer, "[t]")
  first = jax.tree.leaves(state.model.params)[0]
  assert float(first.reshape(-1)[0]) == counters.step  # the parameters of that checkpoint
  return counters.step


def test_resume_takes_the_latest_periodic_before_the_first_missing_point(run_dir, capsys):
  ctx, stage, trainer, folder = run_dir
  assert _resumed_step(ctx, stage, trainer) == 15
  assert "resuming from the periodic checkpoint at step 15 (1,700 tokens)" in capsys.readouterr().out
  # the periodic checkpoint past the missing save point 2000 is of no use: removed
  assert checkpoint.steps(stages.periodic_dir(folder)) == [15]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before(run_dir, capsys):
  ctx, stage, trainer, folder = run_dir
  _damage(stages.periodic_dir(folder) / "15", "truncate arrays")
  assert _resumed_step(ctx, stage, trainer) == 9
  out = capsys.readouterr().out
  assert "WARNING: checkpoint at step 15 is unreadable" in out
  assert "resuming from the save point checkpoint at step 9" in out
  assert (stages.periodic_dir(folder) / "15.unreadable").exists()
  # an unreadable save point is set aside too, so the run saves it again on its way
  _damage(folder / "1000", "delete meta item")
  state, counters = stages._resume(ctx, stage, trainer, "[t]")
  assert counters.step == 0
  assert "WARNING: checkpoint at step 1,000 is unreadable" in capsys.readouterr().out
  assert stages.train_missing(ctx.cfg, ctx.workdir, stage) == [1000, 2000, 3000]


def test_preemption_notice_is_answered_at_the_next_step(monkeypatch):
  monkeypatch.setattr(preemption._Notice, "heard", False)
  assert not preemption.reached(3)
  with pytest.raises(preemption.Preempted) as stopped, preemption.deferred():
    preemption._on_sigterm(signal.SIGTERM, None)  # deferred: only noted
    assert preemption.reached(4)
    preemption.stop_if_reached(4, "here")
  assert stopped.value.code == preemption.EXIT_CODE == 75
  with pytest.raises(preemption.Preempted):  # outside training: at once
    preemption._on_sigterm(signal.SIGTERM, None)


# ---------------------------------------------------------------- SIGTERM, for real

CONFIG = f"""
exec(open({str(ROOT / 'configs' / 'demo.py')!r}).read())
_demo = get_config

def get_config():
  cfg = _demo()
  cfg.pretrain.update(objective="causal_lm", batch_size=8, log_every=10, warmup_steps=10,
                      checkpoint_every_steps=5)
  cfg.mixtures = {{"text": {{"xa": 1.0}}}}
  cfg.grid.update(size=("lm_micro",), mixture=("text",), pair=(), D_f=(), D_p=(1500, 8000))
  cfg.eval.update(lm_max_batches=1, batch_size=8)
  cfg.fits.curves = {{"loss": config.curve("power_law", ("D_p",), "loss")}}
  cfg.fits.bootstrap = 4
  return cfg
"""


def _start(config, workdir) -> subprocess.Popen:
  # one XLA cache for the three runs: the second and third load what the first compiled
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", SCALING_COMPILATION_CACHE=str(config.parent / "xla_cache"))
  return subprocess.Popen(
      [sys.executable, "-m", "scaling", "run", "--config", str(config), "--workdir", str(workdir)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, code: int = 0) -> str:
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == code, out[-3000:]
  return out


def _periodic_after_first_point(workdir: pathlib.Path) -> bool:
  """Whether a periodic checkpoint later than the save point 1500 is complete."""
  for run in (workdir / "pretrain").glob("*"):
    meta = run / "1500" / "meta" / "metadata"
    steps = [int(p.name) for p in (run / "periodic").glob("*") if p.name.isdigit()]
    if meta.exists() and steps and max(steps) > json.loads(meta.read_text())["step"]:
      return True
  return False


def _final_params(workdir: pathlib.Path) -> list[np.ndarray]:
  import orbax.checkpoint as ocp  # read as saved, without building the model
  (run,) = (workdir / "pretrain").glob("*")
  tree = ocp.PyTreeCheckpointer().restore((run / "8000" / "model").resolve())
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_sigterm_mid_pretraining_resumes_from_the_periodic_checkpoint(tmp_path):
  config = tmp_path / "study.py"
  config.write_text(CONFIG)
  stopped = _start(config, tmp_path / "stopped")
  deadline = time.monotonic() + 600
  while not _periodic_after_first_point(tmp_path / "stopped"):
    assert stopped.poll() is None and time.monotonic() < deadline, "no periodic checkpoint"
    time.sleep(0.05)
  stopped.send_signal(signal.SIGTERM)
  first = _finish(stopped, code=preemption.EXIT_CODE)
  assert "preempted: saved at step" in first
  resumed = _finish(_start(config, tmp_path / "stopped"))
  assert "resuming from the periodic checkpoint at step" in resumed
  assert "resuming from the save point" not in resumed
  whole = _finish(_start(config, tmp_path / "whole"))
  assert "resuming" not in whole
  for a, b in zip(_final_params(tmp_path / "stopped"), _final_params(tmp_path / "whole"),
                  strict=True):
    np.testing.assert_array_equal(a, b)  # bitwise
