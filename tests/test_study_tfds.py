"""The same study code path on TFDS data (WMT + C4), with tfds.testing.mock_data
standing in for the downloads this machine cannot make."""
import pytest
import tensorflow_datasets as tfds

from scaling import config as config_lib
from scaling import results
from scaling import runner
from scaling.data import synthetic
from scaling.data import vocab as vocab_lib
from tfds_fakes import write_tfds_metadata


def tfds_config(tmp_path):
  # Any SentencePiece model will do; the synthetic world's is at hand.
  vocab = vocab_lib.get_vocabulary(tmp_path / "vocab", synthetic.WorldConfig())
  cfg = config_lib.base_config()
  cfg.name = "tfds_study"
  cfg.data.update(source="tfds", vocabulary=vocab.sentencepiece_model_file,
                  tfds_data_dir=str(tmp_path / "tfds"))
  cfg.data.pretrain_sources = {"en": "c4/en"}
  cfg.data.translation_sources = {"de-en": "wmt14_translate/de-en"}
  cfg.mixtures = {"english": {"en": 1.0}}
  cfg.grid.update(size=("micro",), mixture=("english",), D_p=(800, 1600, 2400, 3200, 4000),
                  pair=("de-en",), D_f=(600,))
  cfg.pretrain.update(batch_size=8, input_length=32, target_length=16, log_every=10)
  cfg.finetune.update(batch_size=8, input_length=32, target_length=32, steps=3, log_every=10)
  cfg.eval.update(max_examples=8, batch_size=8, max_decode_length=8)
  cfg.fits.bootstrap = 8
  return cfg


def test_tfds_study_runs_through_the_same_stages(tmp_path):
  data_dir = str(tmp_path / "tfds")
  write_tfds_metadata(data_dir, "wmt14_translate/de-en", {"train": 40, "validation": 8, "test": 8})
  write_tfds_metadata(data_dir, "c4/en", {"train": 40, "validation": 8})
  cfg = tfds_config(tmp_path)
  with tfds.testing.mock_data(num_examples=40, data_dir=data_dir,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    summary = runner.run(cfg, tmp_path / "work")
  assert summary.failed == 0 and summary.ran == 1 + 5 + 5
  frame = results.load(tmp_path / "work")
  assert list(frame["pair"].unique()) == ["de-en"] and set(frame["status"]) == {"ok"}


def test_tfds_sources_are_checked_before_compute(tmp_path):
  cfg = tfds_config(tmp_path)
  cfg.mixtures = {"english": {"fr": 1.0}}
  with pytest.raises(ValueError, match="mixtures.english: 'fr' has no span_corruption training data"):
    runner.prepare(cfg, tmp_path / "work")
  cfg = tfds_config(tmp_path)
  cfg.data.vocabulary = str(tmp_path / "missing.model")
  with pytest.raises(ValueError, match="data.vocabulary"):
    runner.prepare(cfg, tmp_path / "work")
