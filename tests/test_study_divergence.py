"""A micro study whose finetunes diverge for real (a learning rate that overflows the
parameters): their rows say 'diverged' with the step, the rows that do not depend on
them are 'ok', the grid goes on, the fits say what they left out, and every training
stage leaves its logs."""
import json
import pathlib

import pytest

from scaling import config as config_lib
from scaling import logs
from scaling import results
from scaling import runner

DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")


def diverging_config():
  cfg = config_lib.load(DEMO)
  cfg.grid.size = ("micro",)
  cfg.grid.mixture = ("aligned",)
  cfg.grid.D_p = (1500, 3000)
  cfg.grid.D_f = (0, 3000)  # D_f=0 rows evaluate the pretrained weights: no finetune
  cfg.pretrain.update(batch_size=8, log_every=5)
  cfg.finetune.update(batch_size=8, steps=4, log_every=10, learning_rate=1e30,
                      warmup_steps=0, schedule="constant")
  cfg.eval.update(max_examples=16, batch_size=8, max_decode_length=12)
  cfg.fits.bootstrap = 16
  return cfg


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("diverging")
  return workdir, runner.run(diverging_config(), workdir)


def test_diverged_rows_carry_the_step_and_the_rest_are_ok(study):
  workdir, summary = study
  # 1 pretraining run and the 2 D_f=0 evaluations ran; 2 finetunes diverged, and
  # their 2 evaluations count with them.
  assert (summary.ran, summary.failed, summary.diverged) == (3, 0, 4)
  frame = results.load(workdir)
  finetuned = frame[frame["D_f"] > 0]
  assert set(finetuned["status"]) == {"diverged"}
  assert finetuned["diverged_step"].tolist() == [2, 2]
  assert finetuned["error"].str.startswith("finetune diverged: loss not finite at step 2").all()
  pretrained = frame[frame["D_f"] == 0]
  assert set(pretrained["status"]) == {"ok"} and pretrained["diverged_step"].isna().all()


def test_the_fits_note_the_diverged_runs(study):
  workdir, _ = study
  assert "left out 2 diverged runs" in (workdir / "fits.md").read_text()


def test_every_training_stage_logs(study):
  workdir, _ = study
  (pretrain,) = (workdir / "logs" / "pretrain").iterdir()
  records = [json.loads(line) for line in (pretrain / logs.JSONL).read_text().splitlines()]
  steps = [r["step"] for r in records]
  assert steps == sorted(set(steps)) and len(steps) >= 2
  assert all(r["loss"] > 0 and r["mfu"] > 0 for r in records)
  assert list(pretrain.glob("events.out.tfevents.*"))
  for finetune in (workdir / "logs" / "finetune").iterdir():
    # Checked at the end of these 4 steps (log_every 10): the last record is NaN.
    (record,) = [json.loads(line) for line in (finetune / logs.JSONL).read_text().splitlines()]
    assert record["step"] == 4 and record["loss"] is None
