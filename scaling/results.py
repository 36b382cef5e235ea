"""One JSON row per evaluated run, and the study's table of them.

Rows live at `<workdir>/results/<key>.json`, written atomically (temp file, then
rename) so an interrupted study never leaves a half row. `load(workdir)` is what
a notebook calls.
"""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
from etils import epath

COLUMNS = (
    "key", "status", "kind", "size", "N", "N_e", "N_d", "N_nonembed", "d_model",
    "encoder_layers", "decoder_layers", "mixture", "rates", "p", "pair", "objective",
    "D_p", "D_p_seen", "D_f", "D_f_seen", "ce", "bleu", "chrf", "loss", "bits_per_token",
    "flops", "schedule", "branch", "decode", "sacrebleu", "wall_s", "pretrain_key",
    "finetune_key", "config_hash", "error", "diverged_step",
)
SORT_BY = ("size", "encoder_layers", "decoder_layers", "d_model", "mixture", "pair", "D_f",
           "D_p")


# The columns only one kind of row fills.
KIND_COLUMNS = {"translation": ("p", "ce", "bleu", "chrf", "decode", "sacrebleu"),
                "lm": ("loss", "bits_per_token")}
_TRANSLATION_ONLY, _LM_ONLY = KIND_COLUMNS["translation"], KIND_COLUMNS["lm"]
_FINETUNE_ONLY = ("D_f_seen", "finetune_key")
# Only rows whose status is not 'ok' fill these: what went wrong, and for status
# 'diverged' the step (of the stage named in `error`) whose loss was not finite.
_PROBLEM_ONLY = ("error", "diverged_step")


def produced_columns(*, translation: bool, lm: bool, finetunes: bool) -> set[str]:
  """The columns a study's rows fill, given what it evaluates."""
  columns = set(COLUMNS) - set(_TRANSLATION_ONLY + _LM_ONLY + _FINETUNE_ONLY) - set(_PROBLEM_ONLY)
  for wanted, only in ((translation, _TRANSLATION_ONLY), (lm, _LM_ONLY),
                       (finetunes, _FINETUNE_ONLY)):
    if wanted:
      columns |= set(only)
  return columns


def results_dir(workdir: epath.PathLike) -> epath.Path:
  return epath.Path(workdir) / "results"


def row_path(workdir: epath.PathLike, key: str) -> epath.Path:
  return results_dir(workdir) / f"{key}.json"


def write_row(workdir: epath.PathLike, row: dict[str, Any]) -> epath.Path:
  """Writes one row atomically; unknown columns are an error (a typo would be lost)."""
  unknown = set(row) - set(COLUMNS)
  if unknown:
    raise ValueError(f"results row has unknown columns {sorted(unknown)}")
  path = row_path(workdir, row["key"])
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_text(json.dumps({c: _clean(row.get(c)) for c in COLUMNS}, indent=1, sort_keys=True))
  tmp.replace(path)
  return path


def read_row(workdir: epath.PathLike, key: str) -> dict[str, Any] | None:
  path = row_path(workdir, key)
  return json.loads(path.read_text()) if path.exists() else None


def load(workdir: epath.PathLike) -> pd.DataFrame:
  """All rows of a study as a DataFrame (one row per evaluated run), sorted."""
  folder = results_dir(workdir)
  rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
  frame = pd.DataFrame(rows, columns=list(COLUMNS))
  return frame.sort_values(list(SORT_BY), kind="stable").reset_index(drop=True)


def _clean(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if hasattr(value, "item"):
    return value.item()
  return value
