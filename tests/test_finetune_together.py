"""Finetunes trained together as one vmapped program (train.TrainerGroup, MemberWatch,
GroupProgress): each member trains as it would alone, its bits depend on the group's
size only, a diverged member stops alone, each logs its own records. The runner's
groups run end to end in test_study_e2e (its micro study trains them together)."""
import json

import jax
import numpy as np
import pytest

from scaling import config as config_lib
from scaling import logs
from scaling import train
import test_study_e2e  # the demo's micro config
import test_training_logs


_trainer, _batches = test_training_logs._trainer, test_training_logs._batches  # micro, 8 devices


def _train(trainer, state, steps: int, watch=None, progress=None) -> train.TrainState:
  if progress is None and isinstance(trainer, train.TrainerGroup):
    progress = logs.GroupProgress.build("t", 100, [None] * trainer.size, show=False)
  progress = progress or logs.Progress("t", 100, show=False)
  return train.train(trainer, state, _batches(), train.Counters(),
                     until=lambda c: c.step >= steps, learning_rate=lambda c: 1e-3,
                     progress=progress, watch=watch)


def _params(model_state) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(model_state.params))]


@pytest.mark.slow
def test_each_member_trains_as_it_would_alone():
  trainer = _trainer()
  starts = [trainer.init(seed).model for seed in (0, 1, 2)]
  alone = [_train(trainer, trainer.start_from(model), steps=3).model for model in starts]
  group = train.get_trainer_group(trainer, 3)
  state = _train(group, group.start_from(starts), steps=3, watch=train.MemberWatch(group))
  for i, expected in enumerate(alone):
    member = group.member(state, i)
    assert jax.tree.map(lambda x: x.sharding, member) == jax.tree.map(lambda x: x.sharding,
                                                                      expected)
    for got, want in zip(_params(member), _params(expected)):
      # float rounding apart (Adam can turn it into ~1e-6 where a gradient is ~0)
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_a_members_bits_depend_on_the_group_size_not_on_the_other_members():
  """What lets a group keep a slot for a member trained elsewhere (a copy of another
  start): the member's result is the same to the last bit."""
  trainer = _trainer()
  starts = [trainer.init(seed).model for seed in (0, 1, 2)]
  group = train.get_trainer_group(trainer, 3)
  mixed = _train(group, group.start_from(starts), steps=3, watch=train.MemberWatch(group))
  copies = _train(group, group.start_from([starts[0]] * 3), steps=3,
                  watch=train.MemberWatch(group))
  for got, want in zip(_params(group.member(copies, 1)), _params(group.member(mixed, 0))):
    np.testing.assert_array_equal(got, want)


def _broken(model_state):
  return jax.tree.map(lambda x: x * np.nan if np.issubdtype(x.dtype, np.floating) else x,
                      model_state)


def test_a_diverged_member_stops_alone_and_all_diverged_raise():
  trainer = _trainer()
  starts = [trainer.init(0).model, _broken(trainer.init(1).model), trainer.init(2).model]
  group = train.get_trainer_group(trainer, 3)
  watch = train.MemberWatch(group)
  state = _train(group, group.start_from(starts), steps=2, watch=watch)
  assert set(watch.diverged) == {1} and watch.diverged[1].step == 1
  assert all(np.isfinite(p).all() for i in (0, 2) for p in _params(group.member(state, i)))

  group = train.get_trainer_group(trainer, 2)
  with pytest.raises(train.Diverged):
    _train(group, group.start_from([_broken(m) for m in starts[:2]]), steps=2,
           watch=train.MemberWatch(group))


def test_each_member_logs_its_own_records(tmp_path):
  trainer = _trainer()
  group = train.get_trainer_group(trainer, 2)
  folders = [tmp_path / "a", tmp_path / "b"]
  progress = logs.GroupProgress.build("group", 2, folders, show=False, total_steps=4)
  starts = [trainer.init(0).model, trainer.init(1).model]
  _train(group, group.start_from(starts), steps=4, watch=train.MemberWatch(group),
         progress=progress)
  losses = [[json.loads(line)["loss"] for line in (f / logs.JSONL).read_text().splitlines()]
            for f in folders]
  assert [len(member) for member in losses] == [2, 2]  # steps 2 and 4
  assert losses[0] != losses[1]  # each its own member's, not the group's mean


def test_finetune_together_is_validated():
  cfg = test_study_e2e.micro_config()
  cfg.finetune.together = 0
  with pytest.raises(config_lib.ConfigError, match="finetune.together"):
    config_lib.validate(cfg)
