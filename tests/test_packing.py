"""Packed rows (seqio's packing feature converters) train the same model as one example
per row: the summed loss and the tokens counted are equal, for the encoder-decoder
and the decoder-only LM (relative and rotary positions)."""
import dataclasses

import numpy as np
import pytest
import seqio
import tensorflow as tf
from flax import nnx

from models import build_model, sizes
from scaling import config, train

_EXAMPLE_LENGTHS = [(5, 4), (9, 3), (3, 7), (6, 6), (4, 2), (11, 5), (2, 3)]


def _examples(lm: bool) -> tf.data.Dataset:
  rng = np.random.default_rng(0)
  rows = [{"inputs": rng.integers(2, 100, n_in).astype(np.int32),
           "targets": rng.integers(2, 100, n_tgt).astype(np.int32)}
          for n_in, n_tgt in _EXAMPLE_LENGTHS]
  if lm:
    rows = [{"targets": np.concatenate([r["inputs"], r["targets"]])} for r in rows]
  spec = {k: tf.TensorSpec([None], tf.int32) for k in rows[0]}
  return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=spec)


def _batch(lm: bool, pack: bool) -> dict:
  converter = (seqio.LMFeatureConverter if lm else seqio.EncDecFeatureConverter)(pack=pack)
  lengths = {"targets": 24} if lm else {"inputs": 16, "targets": 12}
  rows = list(converter(_examples(lm), lengths).as_numpy_iterator())
  return {k: np.stack([row[k] for row in rows]) for k in rows[0] if "positions" not in k}


@nnx.jit
def _summed_nll(model, batch):
  nll, _ = train.cross_entropy(train.forward(model, batch), batch["decoder_target_tokens"],
                               batch["decoder_loss_weights"])
  return nll


def _summed_loss(model, batch) -> float:
  return float(_summed_nll(model, batch))


@pytest.mark.parametrize("size", [sizes.get("micro"),
                                  dataclasses.replace(sizes.get("lm_micro"),
                                                      position_encoding="relative"),
                                  dataclasses.replace(sizes.get("lm_micro"),
                                                      position_encoding="rotary")],
                         ids=["encoder_decoder", "lm_relative", "lm_rotary"])
def test_packed_rows_give_the_loss_of_one_example_per_row(size):
  lm = size.kind == sizes.DECODER_ONLY
  model = build_model(size, rngs=nnx.Rngs(0))
  unpacked, packed = _batch(lm, pack=False), _batch(lm, pack=True)
  assert len(packed["decoder_target_tokens"]) < len(unpacked["decoder_target_tokens"])
  assert packed["decoder_segment_ids"].max() > 1  # rows hold several examples
  assert train.batch_tokens(packed) == train.batch_tokens(unpacked)
  np.testing.assert_allclose(_summed_loss(model, packed), _summed_loss(model, unpacked),
                             rtol=2e-5)


def test_the_segments_matter():
  """Without its segment ids a packed row attends across examples: another loss."""
  model = build_model(sizes.get("micro"), rngs=nnx.Rngs(0))
  packed = _batch(lm=False, pack=True)
  blind = {k: v for k, v in packed.items() if "segment" not in k}
  assert abs(_summed_loss(model, blind) - _summed_loss(model, packed)) > 1e-3


def test_decoder_only_translation_cannot_be_packed():
  cfg = config.base_config()
  cfg.mixtures = {"m": {"xa": 1.0}}
  cfg.grid.update(size=("lm_micro",), mixture=("m",), D_p=(1000,), pair=("xa-ya",),
                  D_f=(500,))
  cfg.pretrain.objective = "causal_lm"
  cfg.pretrain.pack = True  # causal-LM pretraining packs
  config.validate(cfg)
  cfg.finetune.pack = True  # a prefix LM does not
  with pytest.raises(config.ConfigError, match="finetune.pack"):
    config.validate(cfg)
