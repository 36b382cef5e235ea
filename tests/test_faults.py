"""SIGKILL at random moments, then the same command again: the study ends with the rows
and fits of an uninterrupted run (two trials here; `python -m scaling.faults` runs ten)."""
import pathlib

import pytest

from scaling import faults

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The demo's shape at its smallest: a pretraining run with periodic checkpoints, three
# finetunes (trained in fixed groups of two and one) and evaluations, and the fits.
CONFIG = f"""
exec(open({str(ROOT / 'configs' / 'demo.py')!r}).read())
_demo = get_config

def get_config():
  cfg = _demo()
  cfg.grid.update(size=("micro",), mixture=("aligned",), D_p=(1500, 3000, 4500), D_f=(3000,))
  cfg.pretrain.update(batch_size=8, log_every=10, checkpoint_every_steps=5)
  cfg.finetune.update(batch_size=8, steps=4, log_every=10, together=2)  # groups of 2 and 1
  cfg.eval.update(max_examples=16, batch_size=8, max_decode_length=12)
  cfg.fits.bootstrap = 8
  return cfg
"""


@pytest.mark.slow
def test_killed_studies_end_as_the_uninterrupted_one(tmp_path):
  config = tmp_path / "study.py"
  config.write_text(CONFIG)
  said = []
  trials = faults.run_trials(str(config), tmp_path / "faults", trials=2, seed=1, say=said.append)
  assert said[0].startswith("reference run:")
  assert len(trials) == 2
  for trial in trials:
    assert trial.identical, trial.describe()
    assert ", 0 failed, 0 diverged" in trial.rerun, trial.describe()
  assert any(t.killed_at_s is not None for t in trials)


def test_a_changed_row_is_reported(tmp_path):
  import json
  for name in ("reference", "trial"):
    (tmp_path / name / "results").mkdir(parents=True)
    row = dict(key="a", status="ok", kind="translation", bleu=12.5, wall_s=3.0)
    if name == "trial":
      row.update(bleu=12.500001, wall_s=4.0)  # wall time may differ; BLEU may not
    (tmp_path / name / "results" / "a.json").write_text(json.dumps(row))
    (tmp_path / name / "fits.csv").write_text("law\n")
  assert faults.compare(tmp_path / "reference", tmp_path / "reference") == []
  assert faults.compare(tmp_path / "reference", tmp_path / "trial") == ["column 'bleu' differs"]
