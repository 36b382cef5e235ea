"""The demo grid at a micro size, end to end: run, re-run (all skipped), outputs,
the results table, bad input caught before compute, and the analysis notebook."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from scaling import checkpoint
from scaling import config as config_lib
from scaling import grid
from scaling import logs
from scaling import results
from scaling import runner
from scaling import stages

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.py")


def micro_config():
  cfg = config_lib.load(DEMO)
  cfg.grid.size = ("micro",)
  cfg.grid.mixture = ("aligned", "unrelated")  # two of the demo's three regimes
  cfg.grid.D_p = (1500, 3000, 4500, 6000, 7500)
  cfg.grid.D_f = (3000,)
  cfg.pretrain.update(batch_size=8, log_every=10)
  # each mixture's five finetunes train together (finetune.together is 1 in configs/demo.py)
  cfg.finetune.update(batch_size=8, steps=4, log_every=10, together=5)
  cfg.eval.update(max_examples=16, batch_size=8, max_decode_length=12)
  cfg.fits.bootstrap = 16
  return cfg


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study")
  summary = runner.run(micro_config(), workdir)
  return workdir, summary


def test_study_runs_every_stage(study):
  workdir, summary = study
  assert summary.failed == 0
  assert summary.ran == 2 + 2 * 5 * 2 and summary.skipped == 0
  frame = results.load(workdir)
  assert len(frame) == 10 and set(frame["status"]) == {"ok"}
  assert set(frame["mixture"]) == {"aligned", "unrelated"}
  assert frame["D_p"].tolist() == [1500, 3000, 4500, 6000, 7500] * 2
  assert (frame["D_p_seen"] >= frame["D_p"]).all()
  assert frame["ce"].between(0, 20).all()
  assert frame["bleu"].between(0, 100).all() and frame["chrf"].between(0, 100).all()
  assert (frame["N"] > frame["N_nonembed"]).all()
  # FLOPs grow with D_p within one pretraining run (shared run, later checkpoints).
  for _, curve in frame.groupby("mixture"):
    assert curve["flops"].is_monotonic_increasing


def test_finetunes_trained_together_each_keep_their_own_outputs(study):
  workdir, _ = study
  cfg = micro_config()
  for stage in grid.expand(cfg).finetunes:
    assert checkpoint.read_meta(stages.stage_dir(workdir, stage),
                                cfg.finetune.steps)["trained_together"] == 5
    records = (stages.log_dir(workdir, stage) / logs.JSONL).read_text().splitlines()
    assert json.loads(records[-1])["step"] == cfg.finetune.steps


def test_the_run_says_where_its_time_went(study):
  _, summary = study
  phases = {"start-up", "compile", "input", "train steps", "checkpoints", "evaluation",
            "decoding", "report"}
  assert phases <= set(summary.seconds)
  assert all(summary.seconds[name] > 0 for name in phases)
  # the phases partition the run: nothing counted twice, little left over
  assert sum(summary.seconds.values()) == pytest.approx(summary.wall_s, rel=0.05, abs=1.0)


def test_outputs_written(study):
  workdir, _ = study
  for name in ("fits.md", "fits.tex", "fits.csv"):
    assert (workdir / name).stat().st_size > 0, name
  plots = sorted(p.name for p in (workdir / "plots").glob("*.png"))
  assert plots == ["bleu_micro.png", "ce_micro.png"]
  csv = (workdir / "fits.csv").read_text()
  assert "log_law" in csv and "power_law" in csv
  assert "booktabs" in (workdir / "fits.tex").read_text() or "\\toprule" in (workdir / "fits.tex").read_text()


def test_rerun_skips_everything_and_keeps_fits(study):
  workdir, _ = study
  before = (workdir / "fits.csv").read_bytes()
  summary = runner.run(micro_config(), workdir)
  assert summary.ran == 0 and summary.failed == 0 and summary.skipped == 22
  assert (workdir / "fits.csv").read_bytes() == before


def test_adding_a_d_p_asks_only_for_its_checkpoint(study):
  workdir, _ = study
  cfg = micro_config()
  cfg.grid.mixture = ("aligned",)
  cfg.grid.D_p = (1500, 3000, 4500, 6000, 7500, 9000)
  ctx, plan = runner.prepare(cfg, workdir)
  from scaling import stages
  assert stages.train_missing(cfg, ctx.workdir, plan.trains[0]) == [9000]


@pytest.mark.parametrize("edit, message", [
    ("cfg.grid.size = ('micro', 'huge_nonexistent')", "huge_nonexistent"),
    ("cfg.mixtures = dict(cfg.mixtures, bad={'qq': 1.0}); cfg.grid.mixture = ('bad',)", "qq"),
    ("cfg.grid.pair = ('xa-zz',)", "zz"),
    ("cfg.pretrain.target_length = 4", "pretrain.target_length"),
    ("cfg.fits.curves.bleu.law = 'no_such_law'", "no_such_law"),
    ("cfg.mesh.data = 3", "mesh"),
])
def test_bad_input_fails_before_compute(tmp_path, edit, message):
  cfg = micro_config()
  exec(edit, {"cfg": cfg})
  with pytest.raises(ValueError, match=message):
    runner.prepare(cfg, tmp_path)
  assert not (tmp_path / "pretrain").exists()


def test_cli_reports_config_errors(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text(f"exec(open({DEMO!r}).read())\n"
                 "_base = get_config\n"
                 "def get_config():\n  c = _base()\n  c.grid.D_p = (10, 5)\n  return c\n")
  proc = subprocess.run([sys.executable, "-m", "scaling", "run", "--config", str(bad),
                         "--workdir", str(tmp_path / "w")], capture_output=True, text=True,
                        env=dict(os.environ), timeout=300)
  assert proc.returncode == 2
  assert "grid.D_p must be strictly increasing" in proc.stderr
  assert not (tmp_path / "w").exists()


def test_cli_reports_errors_found_while_preparing_without_traceback(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text(f"exec(open({DEMO!r}).read())\n"
                 "_base = get_config\n"
                 "def get_config():\n  c = _base()\n  c.grid.size = ('tiny', 'huge')\n  return c\n")
  proc = subprocess.run([sys.executable, "-m", "scaling", "run", "--config", str(bad),
                         "--workdir", str(tmp_path / "w")], capture_output=True, text=True,
                        env=dict(os.environ), timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.startswith("config error: grid.size: size='huge'")
  assert "Traceback" not in proc.stderr


NOTEBOOK_CONFIG = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_study_e2e import micro_config as get_config
"""


def test_notebook_fits_with_bootstrap_and_agrees_with_the_report(study, tmp_path):
  """The analysis notebook runs on the study and reproduces its fits.csv: every curve, the
  same parameters and Isik verdicts, with bootstrap intervals around each estimate."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pd = pytest.importorskip("pandas")
  workdir, _ = study
  (tmp_path / "study.py").write_text(NOTEBOOK_CONFIG)
  nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
  os.environ.update(STUDY_WORKDIR=str(workdir), STUDY_CONFIG=str(tmp_path / "study.py"))
  try:
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
  finally:
    del os.environ["STUDY_WORKDIR"], os.environ["STUDY_CONFIG"]
  outputs = [o for c in nb.cells for o in c.get("outputs", [])]
  (line,) = [t for o in outputs for t in str(o.get("text", "")).splitlines()
             if t.startswith("SUMMARY ")]
  summary = {c["curve"]: c for c in json.loads(line[len("SUMMARY "):])}
  assert any("image/png" in o.get("data", {}) for o in outputs)  # the regimes were drawn
  report_table = pd.read_csv(workdir / "fits.csv").set_index("group")
  assert sorted(summary) == sorted(report_table.index)  # 2 curves x 2 mixtures
  for name, curve in summary.items():
    row = report_table.loc[name]
    assert curve["status"] == row["status"]
    if name.startswith("bleu"):
      assert curve["isik_rule"] == row["isik_rule"]
    assert curve["D_p"] == [1500, 3000, 4500, 6000, 7500]
    if curve["status"] != "ok":
      continue
    assert curve["n_bootstrap"] == micro_config().fits.bootstrap
    for param, value in curve["params"].items():
      assert value == pytest.approx(row[param], rel=1e-5)
      lo, hi = curve["ci"][param]
      assert lo <= hi and lo == pytest.approx(row[f"{param}_lo"], rel=1e-5)


def test_a_finetune_trained_again_is_bit_for_bit_the_same(study):
  """A run stopped while a group was being saved trains its missing member again, in a
  group of the same size (the other slots only keep the size): the same bits as the
  uninterrupted run, which is what lets a killed study end as an uninterrupted one."""
  workdir, _ = study
  cfg = micro_config()
  stage = grid.expand(cfg).finetunes[1]  # the second member of the first group
  folder = stages.stage_dir(workdir, stage)
  ctx, _ = runner.prepare(cfg, workdir)
  abstract = dict(model=ctx.trainer(stage.source.train, "finetune").abstract_model_state)
  weights = lambda: jax.tree.leaves(jax.device_get(
      checkpoint.restore(folder, cfg.finetune.steps, abstract)[0]["model"].params))
  before = weights()
  checkpoint.delete_all(folder)
  summary = runner.run(cfg, workdir)
  assert (summary.ran, summary.skipped) == (1, 21)
  for got, want in zip(weights(), before):
    np.testing.assert_array_equal(got, want)
  assert checkpoint.read_meta(folder, cfg.finetune.steps)["trained_together"] == 5


def test_a_training_runs_batches_are_held_up_to_its_budget(tmp_path, monkeypatch):
  """The batches up to a run's budget are read before its first step and held: a second
  run on the same data (another size) replays them without opening the stream; past
  the budget, the stream goes on where the held batches end."""
  from scaling import grid, inputs, train
  cfg = micro_config()
  data = inputs.StudyInputs.build(cfg, tmp_path)
  mixture = grid.training_data(cfg)[0]
  shards = inputs.InputShards((0,), 1)
  budget = 2000
  with shards.batches(data.training_mixture(mixture), cfg.pretrain, cfg.pretrain.batch_size,
                      cfg.seed) as stream:
    expected = [next(stream) for _ in range(40)]
  held_count = int(np.searchsorted(np.cumsum([train.batch_tokens(b) for b in expected]),
                                   budget)) + 1  # the batch that reaches the budget, too
  with data.train_batches(mixture, cfg.seed, shards, budget_tokens=budget) as batches:
    first = [next(batches) for _ in range(held_count)]
  opened = []
  real_batches = inputs.InputShards.batches
  monkeypatch.setattr(inputs.InputShards, "batches",
                      lambda *a, **k: opened.append(1) or real_batches(*a, **k))
  with data.train_batches(mixture, cfg.seed, shards, budget_tokens=budget) as batches:
    again = [next(batches) for _ in range(held_count)]
    assert not opened  # replayed from memory
    beyond = [next(batches) for _ in range(3)]  # read from the stream, after the held ones
  assert opened == [1]
  for want, got, replayed in zip(expected, first, again):
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
      np.testing.assert_array_equal(replayed[k], want[k])
  for want, got in zip(expected[held_count:], beyond):
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_a_finetunes_batches_are_read_once_and_replayed(tmp_path):
  """Every finetune on one subset reads the same batches: held after the first, they
  are the stream's first `steps` batches, replayed without opening it again."""
  from scaling import inputs
  cfg = micro_config()
  data = inputs.StudyInputs.build(cfg, tmp_path)
  section = cfg.finetune
  subset = data.finetune_subset("xa-ya", 3000, section)
  shards = inputs.InputShards((0,), 1)
  with subset.batches(section.batch_size, cfg.seed, shards) as stream:
    expected = [next(stream) for _ in range(section.steps)]
  first = list(data.finetune_batches(subset, section.batch_size, cfg.seed, shards, section.steps))
  subset.batches = None  # a second read would fail
  again = list(data.finetune_batches(subset, section.batch_size, cfg.seed, shards, section.steps))
  assert len(first) == len(again) == section.steps
  for want, got, replayed in zip(expected, first, again):
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
      np.testing.assert_array_equal(replayed[k], want[k])
