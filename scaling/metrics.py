"""Translation quality of decoded text.

The only module that imports sacrebleu: BLEU and chrF are always computed by
sacrebleu on detokenized text, never on token ids.
"""
from __future__ import annotations

from collections.abc import Sequence

import sacrebleu


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """sacrebleu corpus BLEU (13a tokenization, exp smoothing) and chrF (beta 2) of one
  reference set, with the BLEU signature that says how it was computed."""
  _check_pairs(hypotheses, references)
  # force: both sides are always raw, detokenized text here (decoded SentencePiece
  # vs. the data's own references), whatever their punctuation spacing looks like.
  bleu = sacrebleu.BLEU(force=True)
  refs = [list(references)]
  return dict(bleu=float(bleu.corpus_score(list(hypotheses), refs).score),
              chrf=float(sacrebleu.CHRF().corpus_score(list(hypotheses), refs).score),
              sacrebleu=str(bleu.get_signature()))


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
  if len(hypotheses) != len(references):
    raise ValueError(
        f"hypotheses ({len(hypotheses)}) and references ({len(references)}) differ in length")
  if not references:
    raise ValueError("no references to score")
