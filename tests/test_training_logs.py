"""The training loop's logs (TensorBoard, JSONL, progress lines and bars) and its
divergence check, on a micro model for a few steps."""
import json

import numpy as np
import pytest

from models import sizes
from scaling import logs
from scaling import mesh as mesh_lib
from scaling import train


def _trainer() -> train.Trainer:
  """One compiled trainer for every test: the rate comes from the host at each step."""
  step_cfg = train.StepConfig("adamw", 1e-3, 0, "constant", 0.0)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig())
  return train.get_trainer(train.ModelConfig(sizes.get("micro")), step_cfg, mesh)


def _batches(seed: int = 0):
  rng = np.random.default_rng(seed)
  while True:
    yield dict(encoder_input_tokens=rng.integers(1, 128, (8, 16)),
               decoder_input_tokens=rng.integers(1, 128, (8, 12)),
               decoder_target_tokens=rng.integers(1, 128, (8, 12)),
               decoder_loss_weights=np.ones((8, 12), np.float32))


def _run(progress, steps: int, learning_rate: float = 1e-3, **kwargs) -> train.Counters:
  trainer, counters = _trainer(), train.Counters()
  train.train(trainer, trainer.init(0), _batches(), counters, until=lambda c: c.step >= steps,
              learning_rate=lambda c: learning_rate, progress=progress, **kwargs)
  return counters


def test_records_go_to_jsonl_and_tensorboard(tmp_path):
  folder = tmp_path / "logs" / "finetune" / "key"
  progress = logs.Progress("stage", 2, folder=folder, total_steps=5, peak_flops=1e12,
                           interactive=False)
  _run(progress, steps=5)
  records = [json.loads(line) for line in (folder / logs.JSONL).read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4, 5]  # every 2 steps, and the last
  for record in records:
    assert set(logs.SCALARS) <= set(record)
    assert all(np.isfinite(record[k]) for k in logs.SCALARS)
  assert records[0]["tokens"] < records[-1]["tokens"]

  tf = pytest.importorskip("tensorflow")
  (events,) = folder.glob("events.out.tfevents.*")
  seen: dict[str, list[int]] = {}
  for event in tf.compat.v1.train.summary_iterator(str(events)):
    for value in event.summary.value:
      seen.setdefault(value.tag, []).append(event.step)
  assert seen == {tag: [2, 4, 5] for tag in logs.SCALARS}


def test_a_resumed_stage_goes_on_in_the_same_jsonl(tmp_path):
  for _ in range(2):
    progress = logs.Progress("stage", 1, folder=tmp_path, interactive=False)
    _run(progress, steps=2)
  steps = [json.loads(line)["step"] for line in (tmp_path / logs.JSONL).read_text().splitlines()]
  assert steps == [1, 2, 1, 2]
  assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


def test_plain_lines_off_a_terminal_and_a_bar_on_one(capsys):
  _run(logs.Progress("[1/1] finetune", 2, total_steps=4, interactive=False),
       steps=4)
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 2 and lines[0].startswith("[1/1] finetune  step 2/4  loss ")
  assert "tok/s" in lines[0] and "ETA" in lines[0]
  _run(logs.Progress("[1/1] finetune", 2, total_steps=4, interactive=True), steps=4)
  drawn = capsys.readouterr().out
  # The bar, then the final record left behind as a line; no periodic lines.
  assert "[1/1] finetune:" in drawn and "/4 [" in drawn
  assert "finetune  step 4/4  loss " in drawn and "step 2/4" not in drawn


def test_a_nan_loss_raises_diverged_at_its_step():
  # A real divergence: at this rate the first update leaves parameters so large that
  # the second loss overflows to NaN. Checked only at the end here (log_every 100).
  with pytest.raises(train.Diverged) as raised:
    _run(logs.Progress("stage", 100, show=False), steps=4, learning_rate=1e30)
  assert raised.value.step == 2 and np.isnan(raised.value.loss)


def test_a_state_with_a_nan_loss_is_never_saved():
  saved = []
  with pytest.raises(train.Diverged) as raised:
    _run(logs.Progress("stage", 100, show=False), steps=4, learning_rate=1e30,
         on_step=lambda state, c: saved.append(c.step), save_due=lambda c: True)
  assert raised.value.step == 2 and saved == [1]


def test_non_finite_parameters_stop_the_run_before_a_save():
  saved = []
  with pytest.raises(train.Diverged) as raised:
    _run(logs.Progress("stage", 100, show=False), steps=4, learning_rate=float("inf"),
         on_step=lambda state, c: saved.append(c.step), save_due=lambda c: True)
  # Step 1's loss was finite, but the parameters it left were not.
  assert raised.value.step == 1 and raised.value.what == "parameters"
  assert saved == []
