"""The Ray executor (`run --executor ray`): on a local Ray cluster of 2 CPUs its rows and fits
equal the local executor's; a worker killed mid-pretraining is retried and resumes from its
periodic checkpoint; an unreachable cluster or a stage no node can hold is a config error
before any compute. Each CLI run starts its own local cluster and shuts it down."""
import json
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from scaling import config as config_lib  # noqa: E402
from scaling import executor_ray  # noqa: E402
from scaling import grid  # noqa: E402
from scaling import lease as lease_lib  # noqa: E402
from scaling import preemption  # noqa: E402
from scaling import results  # noqa: E402
from scaling import runner  # noqa: E402
from scaling import train  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING_COLUMNS = ["wall_s"]  # the only column that differs between two runs of a study

CONFIG = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_study_e2e import micro_config

def get_config(variant=""):
  cfg = micro_config()
  cfg.grid.mixture = ("aligned",)
  cfg.grid.D_p = (1500, 12000)  # two segments; the second long enough to be killed mid-way
  cfg.grid.D_f = ()             # each checkpoint evaluated directly: 4 Ray tasks
  cfg.eval.update(max_examples=8)
  if variant == "periodic":
    cfg.pretrain.checkpoint_every_steps = 2  # changes no stage key
  if variant == "gpus":
    cfg.resources.train.num_gpus = 8
  if variant == "together":
    cfg.grid.D_f = (3000,)
    cfg.finetune.together = 2
  return cfg
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """The config file, and a compilation cache the runs share (compiled programs are the
  same whichever process compiles them)."""
  folder = tmp_path_factory.mktemp("ray_study")
  (folder / "study.py").write_text(CONFIG)
  return folder


def _env(study) -> dict:
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
              JAX_PLATFORMS="cpu", SCALING_COMPILATION_CACHE=str(study / "xla_cache"),
              **{lease_lib.TIMEOUT_ENV: "2", executor_ray.CONNECT_TIMEOUT_ENV: "2"})


def _command(study, workdir, *flags, variant="") -> list[str]:
  config = str(study / "study.py") + (f":{variant}" if variant else "")
  return [sys.executable, "-m", "scaling", "run", "--config", config, "--workdir",
          str(workdir), *flags]


def _run(study, workdir, *flags, variant="") -> subprocess.CompletedProcess:
  return subprocess.run(_command(study, workdir, *flags, variant=variant), env=_env(study),
                        capture_output=True, text=True, timeout=900)


def _ray_processes() -> set[int]:
  """The pids of Ray's daemons on this machine (raylet, GCS)."""
  found = set()
  for proc in pathlib.Path("/proc").iterdir():
    try:
      command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
      continue
    if proc.name.isdigit() and re.search(rb"/(raylet|gcs_server)( |$)", command):
      found.add(int(proc.name))
  return found


def _assert_ray_stopped(before: set[int]) -> None:
  deadline = time.monotonic() + 20
  while (left := _ray_processes() - before) and time.monotonic() < deadline:
    time.sleep(0.5)
  assert not left, f"Ray processes left running: {left}"


def _rows(workdir):
  return results.load(workdir).drop(columns=TIMING_COLUMNS)


@pytest.fixture(scope="module")
def local_run(study):
  workdir = study / "local"
  proc = _run(study, workdir)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def ray_run(study):
  before = _ray_processes()
  workdir = study / "ray"
  proc = _run(study, workdir, "--executor", "ray")
  (study / "ray.log").write_text(proc.stdout + proc.stderr)
  _assert_ray_stopped(before)
  return workdir, proc


# ---------------------------------------------------------------- end to end

@pytest.mark.slow
def test_ray_rows_and_fits_equal_the_local_executors(study, local_run, ray_run):
  workdir, proc = ray_run
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "done: 4 tasks ran, 0 skipped, 0 failed" in proc.stdout
  assert re.search(r"\[\d/4\] train size=micro data=aligned until 1,500 tokens  done in",
                   proc.stdout)
  frame = results.load(workdir)
  assert len(frame) == 2 and set(frame["status"]) == {"ok"}
  assert _rows(workdir).equals(_rows(local_run))
  for name in ("fits.csv", "fits.md"):
    assert (workdir / name).read_bytes() == (local_run / name).read_bytes(), name
  assert not list(lease_lib.folder(workdir).iterdir())
  # the local executor's completion checks see every stage done: it would skip them all
  cfg = config_lib.load(str(study / "study.py"))
  plan, done = grid.expand(cfg), runner.StatusContext(cfg, workdir)
  for stage in (*plan.trains, *plan.evaluates):
    assert runner.KINDS[type(stage)].complete(done, stage), stage.key


@pytest.mark.slow
def test_a_rerun_skips_every_stage_without_a_worker(study, ray_run):
  workdir, _ = ray_run
  fits = (workdir / "fits.csv").read_bytes()
  summary = executor_ray.run(config_lib.load(str(study / "study.py")), workdir)
  assert (summary.ran, summary.skipped, summary.failed) == (0, 4, 0)
  assert not ray.is_initialized()
  assert (workdir / "fits.csv").read_bytes() == fits


@pytest.mark.slow
def test_killed_worker_is_retried_and_resumes(study, local_run):
  before = _ray_processes()
  workdir = study / "killed"
  pretraining = grid.expand(config_lib.load(str(study / "study.py"))).trains[0]
  run_dir = workdir / "pretrain" / pretraining.key
  log = study / "killed.log"
  with open(log, "w") as out:
    driver = subprocess.Popen(_command(study, workdir, "--executor", "ray", variant="periodic"),
                              env=_env(study), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
      _wait_for(lambda: _second_segment_under_way(run_dir), driver)
      assert not (run_dir / "12000").exists(), "the run ended before the kill: raise D_p[1]"
      owner = _lease_owner(workdir, pretraining.key)  # host:pid:id of the worker training
      os.kill(int(owner.split(":")[1]), signal.SIGKILL)
      driver.wait(timeout=900)
    finally:
      _stop(driver)
  text = log.read_text()
  assert driver.returncode == 0, text[-4000:]
  assert re.search(rf"until 12,000 tokens  done in \d+ s  \(took over the stale lease of "
                   rf"{re.escape(owner)}\)", text), text[-4000:]
  assert "until 12,000 tokens  resuming from the periodic checkpoint at step" in text
  assert _rows(workdir).equals(_rows(local_run))
  _assert_ray_stopped(before)


def _second_segment_under_way(run_dir: pathlib.Path) -> bool:
  """The first save point is saved (at step 4), and a periodic checkpoint past it."""
  try:
    return (run_dir / "1500").exists() and any(
        p.name.isdigit() and int(p.name) > 4 for p in (run_dir / "periodic").iterdir())
  except FileNotFoundError:  # not there yet, or being removed
    return False


def _lease_owner(workdir: pathlib.Path, key: str) -> str:
  return json.loads((lease_lib.folder(workdir) / f"{key}.json").read_text())["owner"]


def _stop(driver: subprocess.Popen) -> None:
  """A driver the test left running: SIGTERM first, so it shuts its Ray cluster down."""
  if driver.poll() is None:
    driver.terminate()
    try:
      driver.wait(timeout=60)
    except subprocess.TimeoutExpired:
      driver.kill()


def _wait_for(condition, driver: subprocess.Popen, timeout: float = 600) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    assert driver.poll() is None, "the driver ended before the condition held"
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.02)


# ---------------------------------------------------------------- bad input, before compute

@pytest.fixture
def cli(monkeypatch, capsys):
  """`python -m scaling ...` in this process (no start-up imports to wait for): its exit
  status and stderr. The SIGTERM handler the CLI installs is put back afterwards."""
  from scaling import __main__ as cli_lib
  handler = signal.getsignal(signal.SIGTERM)
  monkeypatch.setenv(executor_ray.CONNECT_TIMEOUT_ENV, "2")

  def run(*args):
    code = cli_lib.main([str(a) for a in args])
    return code, capsys.readouterr().err
  yield run
  signal.signal(signal.SIGTERM, handler)


def _study_args(study, workdir, variant=""):
  config = str(study / "study.py") + (f":{variant}" if variant else "")
  return ["run", "--config", config, "--workdir", workdir, "--executor", "ray"]


def test_unreachable_address_is_a_config_error_naming_it(study, tmp_path, cli):
  start = time.monotonic()
  code, err = cli(*_study_args(study, tmp_path / "w"), "--address", "127.0.0.1:1")
  assert code == 2, err
  assert err.startswith("config error: --address 127.0.0.1:1: no Ray cluster answers at "
                        "127.0.0.1:1 within 2 s")
  assert time.monotonic() - start < 30  # not the minutes Ray itself would retry for
  assert not (tmp_path / "w" / "pretrain").exists() and not (tmp_path / "w" / "results").exists()


def test_resources_no_node_has_are_a_config_error(study, tmp_path, cli):
  before = _ray_processes()
  code, err = cli(*_study_args(study, tmp_path / "w", variant="gpus"))
  assert code == 2, err
  assert err.startswith("config error: resources.train.num_gpus=8: no node of the Ray cluster "
                        "has that much GPU (at most 0 on one node)")
  assert not ray.is_initialized()
  assert not (tmp_path / "w" / "pretrain").exists() and not (tmp_path / "w" / "results").exists()
  _assert_ray_stopped(before)


def test_finetunes_together_are_refused_before_compute(study, tmp_path, cli):
  code, err = cli(*_study_args(study, tmp_path / "w", variant="together"))
  assert code == 2, err
  assert err.startswith("config error: finetune.together=2: the Ray executor runs each "
                        "finetune as its own task")
  assert not ray.is_initialized() and not (tmp_path / "w" / "pretrain").exists()


def test_address_without_ray_executor_is_refused(study, tmp_path, cli, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli(*_study_args(study, tmp_path / "w")[:-2], "--address", "auto")
  assert exit_.value.code == 2
  assert "--address names a Ray cluster: it goes with --executor ray" in capsys.readouterr().err


def test_sigterm_while_the_tasks_run_is_a_preemption(tmp_path):
  """Exit status 75 (run again), not the 1 that an exception raised inside ray.wait gives."""
  handler = signal.getsignal(signal.SIGTERM)
  executor_ray._connect(None)  # a local cluster
  try:
    running = {"t": ray.remote(lambda: time.sleep(60)).remote()}
    task = executor_ray.Task("t", None, "train", "a long stage")
    with executor_ray._sigterm_noted() as sigterm:
      threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
      with pytest.raises(preemption.Preempted) as stopped:
        list(executor_ray._ended(None, tmp_path, [task], running, sigterm))
    assert stopped.value.code == preemption.EXIT_CODE
  finally:
    ray.shutdown()
    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------- no cluster needed

def _config(**grid_axes):
  from test_study_e2e import micro_config
  cfg = micro_config()
  cfg.grid.update(grid_axes)
  return cfg


@pytest.mark.parametrize("edit, field", [
    ("cfg.resources.train.num_cpus = -1", "resources.train.num_cpus"),
    ("cfg.resources.evaluate.num_gpus = 1.5", "resources.evaluate.num_gpus"),
    ("cfg.resources.finetune.memory = -2", "resources.finetune.memory"),
    ("cfg.resources.train.resources = {'TPU': -4}", "resources.train.resources.TPU"),
    ("cfg.resources.train.resources = {'GPU': 1}", "resources.train.resources.GPU"),
    ("cfg.resources.max_retries = -1", "resources.max_retries"),
    ("cfg.resources.pretrain = dict(num_cpus=1)", "resources.pretrain"),
])
def test_bad_resources_are_named(edit, field):
  cfg = _config()
  exec(edit, {"cfg": cfg})
  with pytest.raises(config_lib.ConfigError, match=re.escape(field)):
    config_lib.validate(cfg)


def test_good_resources_pass():
  cfg = _config()
  cfg.resources.train.update(num_gpus=0.5, memory=8 * 2**30, resources={"TPU": 4})
  config_lib.validate(cfg)


def test_each_budget_waits_only_for_its_segment():
  cfg = _config(mixture=("aligned",), D_p=(1500, 3000, 4500))
  plan = grid.expand(cfg)
  tasks = executor_ray.tasks(cfg, plan)
  by_id = {task.id: task for task in tasks}
  assert len(by_id) == len(tasks) == 3 + plan.n_stages - 1  # the run as 3 segments
  seen = set()
  for task in tasks:  # upstream first
    assert set(task.upstream) <= seen, task.label
    seen.add(task.id)
  key = plan.trains[0].key
  assert [by_id[f"{key}@{p}"].upstream for p in (1500, 3000, 4500)] == [
      (), (f"{key}@1500",), (f"{key}@3000",)]
  for finetune in plan.finetunes:
    assert by_id[finetune.key].upstream == (f"{key}@{finetune.source.D_p}",)
  for evaluate in plan.evaluates:
    assert by_id[evaluate.key].upstream == (evaluate.weights.finetune.key,)


def test_wsd_cooldowns_wait_for_their_branch_point():
  cfg = _config(mixture=("aligned",), D_p=(1500, 3000))
  cfg.pretrain.update(schedule="wsd", cooldown_fraction=0.2)
  plan = grid.expand(cfg)
  by_id = {task.id: task for task in executor_ray.tasks(cfg, plan)}
  key = plan.trains[0].key
  assert {f"{key}@1200", f"{key}@2400"} <= set(by_id)
  for cooldown in plan.cooldowns:
    assert by_id[cooldown.key].upstream == (f"{key}@{round(0.8 * cooldown.D_p)}",)


def test_a_stage_after_a_diverged_one_writes_the_local_executors_row(tmp_path):
  """Without running: the row says diverged, at the step of the stage that diverged."""
  cfg = _config(mixture=("aligned",), D_p=(1500,), D_f=())
  plan = grid.expand(cfg)
  evaluate = next(t for t in executor_ray.tasks(cfg, plan) if t.kind == "evaluate")
  diverged = runner.Stopped("train", train.Diverged(7, float("nan")))
  upstream = executor_ray.Status("diverged", diverged)
  upstream = pickle.loads(pickle.dumps(upstream))  # as Ray hands it over
  status = executor_ray.settle(cfg, tmp_path, evaluate, (upstream,))
  assert status.outcome == "stopped" and status.stop.diverged
  row = results.read_row(tmp_path, evaluate.id)
  assert row["status"] == "diverged" and row["diverged_step"] == 7
  assert row["error"] == "train diverged: loss not finite at step 7 (loss nan)"
  assert not (tmp_path / "pretrain").exists()


def test_workers_get_the_drivers_xla_jax_and_scaling_variables(monkeypatch):
  monkeypatch.setenv("SCALING_LEASE_TIMEOUT_S", "7")
  monkeypatch.setenv("HOME_AWAY", "x")
  env = executor_ray.forwarded_env()
  assert env["SCALING_LEASE_TIMEOUT_S"] == "7" and env["XLA_FLAGS"] == os.environ["XLA_FLAGS"]
  assert env["JAX_PLATFORMS"] == "cpu" and "HOME_AWAY" not in env
