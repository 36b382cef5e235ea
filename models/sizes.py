"""Named model sizes, as data.

A config says ``size="t5_1_1_base"`` or ``size="ladder_5"``; `get` returns the frozen
`ModelSize`, and ``dataclasses.replace(size, vocab_size=...)`` adapts a preset to a
vocabulary. `models.accounting` derives parameter counts and FLOPs from exactly these
numbers.

Families:
  * CPU sizes for tests and laptop studies: micro, tiny, small_cpu, medium_cpu
    (encoder-decoder) and lm_micro, lm_tiny, lm_small_cpu, lm_medium_cpu
    (decoder-only, rotary positions).
  * T5 v1.1 small/base/large/xl/xxl (32,128-token vocabulary) and the same shapes
    with mT5's 250,112-token vocabulary (Raffel et al. 2020; Xue et al. 2021).
    ``published_params`` holds the reported totals (mT5-large: 1.23B, the released
    checkpoint's count; the paper rounds it to 1.2B).
  * isik_t5_3b: the T5-3B shape of Isik et al. 2024 (24+24 layers, d_model 1024,
    32 heads x 128, d_ff 16384), built from this codebase's gated-GELU blocks, so it
    holds about 3.7B parameters rather than the 2.9B of the original ReLU T5-3B.
  * ladder_1 .. ladder_8: encoder-decoders from about 20M to 1B non-embedding
    parameters at a constant shape ratio (head_dim 64, d_ff ~ 8/3 d_model), for
    Fernandes et al. 2023 / Ghorbani et al. 2021-style size sweeps; lm_ladder_k are
    decoder-only models (rotary) with ladder_k's width and twice one of its stacks'
    depth, for Chinchilla-style LM grids.
"""
from __future__ import annotations

import dataclasses

ENCODER_DECODER = "encoder_decoder"
DECODER_ONLY = "decoder_only"
KINDS = (ENCODER_DECODER, DECODER_ONLY)
POSITION_ENCODINGS = ("relative", "rotary")

T5_VOCAB_SIZE = 32_128
MT5_VOCAB_SIZE = 250_112


@dataclasses.dataclass(frozen=True)
class ModelSize:
  """Shape of one model. ``head_dim=None`` means ``d_model // num_heads``.

  ``num_encoder_layers`` must be 0 for decoder-only models. ``published_params`` is
  the total parameter count a paper reports for this preset (None if none).
  """

  name: str
  kind: str
  vocab_size: int
  d_model: int
  num_heads: int
  head_dim: int | None
  d_ff: int
  num_encoder_layers: int
  num_decoder_layers: int
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.0
  position_encoding: str = "relative"
  rotary_base: float = 10_000.0
  published_params: float | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"ModelSize {self.name!r}: kind={self.kind!r}, expected one of {KINDS}")
    if self.position_encoding not in POSITION_ENCODINGS:
      raise ValueError(
          f"ModelSize {self.name!r}: position_encoding={self.position_encoding!r}, "
          f"expected one of {POSITION_ENCODINGS}")
    for field in ("vocab_size", "d_model", "num_heads", "d_ff", "num_decoder_layers",
                  "relative_attention_num_buckets", "relative_attention_max_distance"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"ModelSize {self.name!r}: {field}={value!r} must be a positive int")
    if self.head_dim is None:
      if self.d_model % self.num_heads:
        raise ValueError(
            f"ModelSize {self.name!r}: num_heads={self.num_heads} does not divide "
            f"d_model={self.d_model} (give head_dim explicitly or change num_heads)")
      object.__setattr__(self, "head_dim", self.d_model // self.num_heads)
    elif not isinstance(self.head_dim, int) or self.head_dim <= 0:
      raise ValueError(
          f"ModelSize {self.name!r}: head_dim={self.head_dim!r} must be a positive int")
    if self.position_encoding == "rotary" and self.head_dim % 2:
      raise ValueError(f"ModelSize {self.name!r}: rotary positions need an even head_dim, "
                       f"got head_dim={self.head_dim}")
    self._check_relative_buckets()
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"ModelSize {self.name!r}: dropout_rate={self.dropout_rate} not in [0, 1)")
    self._check_kind_layers()

  def _check_relative_buckets(self):
    # T5's bucketing spaces buckets logarithmically between num_buckets // 2 (the
    # exact ones, halved again when bidirectional) and max_distance, dividing by
    # log(max_distance / exact): at or below that the buckets are not finite.
    if self.position_encoding != "relative":
      return
    buckets, distance = self.relative_attention_num_buckets, self.relative_attention_max_distance
    if buckets < 4:
      raise ValueError(f"ModelSize {self.name!r}: relative_attention_num_buckets={buckets} "
                       "must be at least 4")
    if distance <= buckets // 2:
      raise ValueError(
          f"ModelSize {self.name!r}: relative_attention_max_distance={distance} must exceed "
          f"half of relative_attention_num_buckets={buckets} (the log-spaced buckets "
          "start there)")

  def _check_kind_layers(self):
    if self.kind == DECODER_ONLY and self.num_encoder_layers != 0:
      raise ValueError(
          f"ModelSize {self.name!r}: decoder_only needs num_encoder_layers=0, got "
          f"{self.num_encoder_layers}")
    if self.kind == ENCODER_DECODER:
      if not isinstance(self.num_encoder_layers, int) or self.num_encoder_layers <= 0:
        raise ValueError(
            f"ModelSize {self.name!r}: num_encoder_layers={self.num_encoder_layers!r} "
            "must be a positive int for an encoder_decoder")
      if self.position_encoding != "relative":
        raise ValueError(
            f"ModelSize {self.name!r}: encoder_decoder supports position_encoding="
            f"'relative' only, got {self.position_encoding!r}")


def _enc_dec(name, d_model, num_heads, head_dim, d_ff, layers, vocab=T5_VOCAB_SIZE,
             published=None, decoder_layers=None):
  return ModelSize(name, ENCODER_DECODER, vocab, d_model, num_heads, head_dim, d_ff,
                   layers, decoder_layers or layers, published_params=published)


def _lm(name, d_model, num_heads, head_dim, d_ff, layers, vocab):
  return ModelSize(name, DECODER_ONLY, vocab, d_model, num_heads, head_dim, d_ff, 0,
                   layers, position_encoding="rotary")


# (name suffix, d_model, heads, d_ff, layers per stack, published T5 v1.1, published mT5)
_T5_1_1 = (
    ("small", 512, 6, 1024, 8, 77e6, 300e6),
    ("base", 768, 12, 2048, 12, 248e6, 580e6),
    ("large", 1024, 16, 2816, 24, 783e6, 1.23e9),
    ("xl", 2048, 32, 5120, 24, 2.85e9, 3.7e9),
    ("xxl", 4096, 64, 10240, 24, 11.3e9, 13e9),
)

# (d_model, layers per stack); heads = d_model / 64, d_ff = 8/3 d_model rounded to 64.
_LADDER = ((384, 5), (512, 5), (640, 5), (768, 6), (1024, 6), (1024, 11),
           (1280, 12), (1536, 15))


def _presets() -> dict[str, ModelSize]:
  presets = [
      _enc_dec("micro", 32, 2, 16, 64, 1, vocab=128),
      _enc_dec("tiny", 64, 4, 16, 128, 2, vocab=1024),
      _enc_dec("small_cpu", 128, 4, 32, 256, 3, vocab=1024),
      _enc_dec("medium_cpu", 256, 4, 64, 640, 4, vocab=1024),
      _lm("lm_micro", 32, 2, 16, 64, 2, vocab=128),
      _lm("lm_tiny", 64, 4, 16, 128, 4, vocab=1024),
      _lm("lm_small_cpu", 128, 4, 32, 256, 6, vocab=1024),
      _lm("lm_medium_cpu", 256, 4, 64, 640, 8, vocab=1024),
      _enc_dec("isik_t5_3b", 1024, 32, 128, 16384, 24),
  ]
  for suffix, d, h, f, layers, t5_pub, mt5_pub in _T5_1_1:
    presets.append(_enc_dec(f"t5_1_1_{suffix}", d, h, 64, f, layers, published=t5_pub))
    presets.append(_enc_dec(f"mt5_{suffix}", d, h, 64, f, layers, vocab=MT5_VOCAB_SIZE,
                            published=mt5_pub))
  for k, (d, layers) in enumerate(_LADDER, start=1):
    d_ff = round(8 * d / 3 / 64) * 64
    presets.append(_enc_dec(f"ladder_{k}", d, d // 64, 64, d_ff, layers))
    presets.append(_lm(f"lm_ladder_{k}", d, d // 64, 64, d_ff, 2 * layers,
                       vocab=T5_VOCAB_SIZE))
  return {p.name: p for p in presets}


PRESETS: dict[str, ModelSize] = _presets()


def names() -> list[str]:
  """All preset names."""
  return list(PRESETS)


def get(name: str) -> ModelSize:
  """The preset called ``name``; ValueError listing the known names otherwise."""
  if name not in PRESETS:
    raise ValueError(f"size={name!r} is not a known preset; known: {', '.join(PRESETS)}")
  return PRESETS[name]
