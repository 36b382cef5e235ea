"""Evaluation of a model's weights: translation quality on one pair (test-set
cross-entropy, then greedy decoding -> detokenized text -> sacrebleu BLEU and chrF),
or a causal LM's held-out loss on its training mixture.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from scaling import grid
from scaling import inputs
from scaling import metrics
from scaling import timing
from scaling import train


def translation(data: inputs.StudyInputs, trainer: train.Trainer, model_state: train.ModelState,
                pair: str) -> dict:
  """ce (nats per target token), bleu, chrf, decode method and sacrebleu signature."""
  ecfg = data.cfg.eval
  with timing.phase("evaluation"):
    ce = mean_cross_entropy(trainer, model_state, data.eval_batches(pair, ecfg))
  with timing.phase("decoding"):
    hypotheses, references = translate(data, trainer, model_state, pair)
  with timing.phase("evaluation"):
    scores = metrics.translation_scores(hypotheses, references)
  return dict(ce=ce, **scores, decode=ecfg.decode,
              example=(hypotheses[0], references[0]))


def language_model(data: inputs.StudyInputs, trainer: train.Trainer,
                   model_state: train.ModelState, training: grid.TrainingData) -> dict:
  """Held-out loss: the share-weighted mean over the mixture's tasks of each task's
  per-token cross-entropy, and the same in bits."""
  with timing.phase("evaluation"):
    loss = sum(share * mean_cross_entropy(trainer, model_state, batches)
               for share, batches in data.lm_eval_sets(training))
  return dict(loss=loss, bits_per_token=loss / math.log(2))


def mean_cross_entropy(trainer: train.Trainer, model_state: train.ModelState,
                       batches: Iterable[train.Batch]) -> float:
  """Token-level cross-entropy (nats per target token) over all batches."""
  total, count = 0.0, 0.0
  for batch in timing.timed_iterator(iter(batches)):
    t, n = trainer.nll(model_state, batch)
    total, count = total + t, count + n
  if count == 0:
    raise ValueError("no target tokens to evaluate cross-entropy on")
  return total / count


def translate(data: inputs.StudyInputs, trainer: train.Trainer, model_state: train.ModelState,
              pair: str) -> tuple[list[str], list[str]]:
  """Greedy-decodes the eval split and detokenizes: (hypotheses, references)."""
  ecfg = data.cfg.eval
  examples = data.eval_examples(pair, ecfg)
  hypotheses = []
  for start in range(0, len(examples.inputs_BS), ecfg.batch_size):
    chunk = examples.inputs_BS[start:start + ecfg.batch_size]
    padded = _pad_rows(chunk, ecfg.batch_size)
    tokens_BT = trainer.decode(model_state, padded, ecfg.max_decode_length)[:len(chunk)]
    hypotheses.extend(data.detokenize(row) for row in tokens_BT)
  return hypotheses, list(examples.references)


def _pad_rows(rows_BS: np.ndarray, batch_size: int) -> np.ndarray:
  """Pads a short last batch with empty rows so decoding compiles once."""
  if len(rows_BS) == batch_size:
    return rows_BS
  pad = np.zeros((batch_size - len(rows_BS), rows_BS.shape[1]), rows_BS.dtype)
  return np.concatenate([rows_BS, pad])
