"""Ghorbani et al. 2021, "Scaling Laws for Neural Machine Translation" (arXiv 2109.07740).

Encoder-decoder Transformers trained from scratch on translation, with encoder and
decoder depth varied separately, and the bivariate law
`L(N_e, N_d) = beta * N_e**-p_e * N_d**-p_d + L_inf` fitted to the test cross-entropy
of each direction. The grid: encoder_layers x decoder_layers over one base width, each
direction trained on its own, one fixed token budget; the largest encoder depth is held
out and predicted.

    python -m scaling run --config configs/ghorbani2021.py:cpu --workdir workdir/ghorbani

Variants:
  full   the paper's setting (cannot run here: TFDS data, TPU scale).
  cpu    the same grid shape on the synthetic world, in minutes on a 2-core CPU.
  micro  the same shape in seconds, for the tests.

Where the full setting comes from:
  * Law, separate encoder / decoder scaling, Adafactor: the paper (PAPERS.md).
  * Data: the paper trains on an in-house web-crawled English-German corpus (2.2B
    sentence pairs, ~55B tokens) that is not public. Approximated by WMT19 en-de from
    TFDS (ParaCrawl, Common Crawl, Europarl, News Commentary, ...: the largest public
    en-de set), both directions; its validation sets (newstest2018, ...) serve as the
    test set, since TFDS's wmt19 has no test split.
  * Vocabulary: a 32k SentencePiece model, as in the paper; T5's public one stands in.
  * Width (d_model 1024, 16 heads x 64, d_ff 8192) and the 6-layer baseline follow the
    paper's description; the depths 6..36 per stack span its ~0.1B-3.5B parameter range
    approximately. This codebase's blocks are gated-GELU (T5 v1.1), not the paper's
    ReLU pre-LN Transformer, so counts per layer differ (~1.5x in the MLP).
  * Budget: the paper trains every model to convergence with a fixed batch of ~500K
    tokens; here one budget of 5e10 tokens (~100K steps of 500K tokens, about one pass
    over a 55B-token corpus). The inverse-sqrt schedule with 10K warm-up steps is T5's,
    an approximation of the paper's.
  * N_e, N_d are the non-embedding encoder / decoder parameter counts; the paper's
    normalisation by reference sizes only rescales beta, so it is left out.
"""
from scaling import config

# The synthetic world of the cpu and micro variants: three families of two
# languages, translation data from the 'fiction' domain.
WORLD = dict(seed=0, n_families=3, n_concepts=150)


def get_config(variant: str = "full"):
  cfg, set_variant = config.study_variant(
      "ghorbani2021", variant, {"full": _full, "cpu": _cpu, "micro": _micro})
  cfg.pretrain.objective = "translation"  # from scratch; no finetune (D_f absent)
  set_variant(cfg)
  return cfg


def _curves(holdout: str) -> dict:
  # One fit per direction, as in the paper's per-language-pair figures.
  return {"ce": config.curve("ghorbani", ("N_e", "N_d"), "ce", group_by=("pair",),
                             holdout=holdout)}


def _full(cfg):
  cfg.data.update(source="tfds",
                  vocabulary="gs://t5-data/vocabs/cc_all.32000/sentencepiece.model")
  wmt19 = {"name": "wmt19_translate/de-en",
           "splits": {"train": "train", "validation": "validation", "test": "validation"}}
  cfg.data.translation_sources = {"en-de": wmt19, "de-en": wmt19}
  cfg.sizes = {"ghorbani_base": dict(base="t5_1_1_large", d_model=1024, num_heads=16,
                                     head_dim=64, d_ff=8192, num_encoder_layers=6,
                                     num_decoder_layers=6)}
  cfg.model.update(dtype="bfloat16", remat="full")
  cfg.mesh = dict(data=-1, fsdp=8, tensor=1)
  # ~500K tokens per batch: sentence pairs average ~25 tokens (55B / 2.2B).
  cfg.pretrain.update(batch_size=16_384, input_length=128, target_length=128,
                      optimizer="adafactor", learning_rate=1e-2, warmup_steps=10_000,
                      schedule="rsqrt", log_every=1000)
  cfg.eval.update(split="test", max_examples=3000, batch_size=256, max_decode_length=128)
  cfg.grid.update(size=("ghorbani_base",), encoder_layers=(6, 12, 24, 36),
                  decoder_layers=(6, 12, 24, 36), D_p=(50_000_000_000,),
                  pair=("en-de", "de-en"))
  cfg.fits.curves = _curves(holdout="largest:4")  # the 36-layer encoders
  cfg.report.plots = ("ghorbani",)


def _synthetic(cfg):
  cfg.data.update(source="synthetic", world=WORLD, vocab_size=1000, finetune_domain="fiction")
  # AdamW rather than Adafactor: at these widths Adafactor's factored moments barely
  # apply (min_dim_size_to_factor is 128), and AdamW is the demo's tested setting.
  cfg.pretrain.update(optimizer="adamw", schedule="rsqrt", input_length=40, target_length=32)
  cfg.report.plots = ("ghorbani",)


def _cpu(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=32, learning_rate=2e-3, warmup_steps=100, log_every=200)
  cfg.eval.update(split="test", max_examples=200, batch_size=100, max_decode_length=32)
  cfg.grid.update(size=("tiny",), encoder_layers=(1, 2, 4), decoder_layers=(1, 2, 4),
                  D_p=(200_000,), pair=("xa-ya",))
  cfg.fits.curves = _curves(holdout="largest:3")  # the 4-layer encoders
  cfg.fits.bootstrap = 100


def _micro(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=8, learning_rate=2e-3, warmup_steps=10, log_every=50)
  cfg.eval.update(split="test", max_examples=16, batch_size=8, max_decode_length=8)
  cfg.grid.update(size=("micro",), encoder_layers=(1, 2), decoder_layers=(1, 2),
                  D_p=(2_000,), pair=("xa-ya",))
  cfg.fits.curves = _curves(holdout="largest:1")
  cfg.fits.bootstrap = 8
