"""A Chinchilla-style LM ladder (Hoffmann et al. 2022, Approach 3).

Decoder-only causal LMs of several sizes N, each trained on D tokens for several D,
and the held-out loss fitted by `L(N, D) = E + A / N**alpha + B / D**beta` (Huber on
log L, L-BFGS from a grid of starts, bootstrap intervals), which gives the
compute-optimal N*(C) and D*(C). The schedule is warmup-stable-decay (Hägele et al.
2024): ONE stable run per size, and each D a short cooldown branch from its
checkpoint, so every (N, D) point is a fully decayed model at a fraction of the cost
of one cosine run per point. The largest size is held out and predicted.

    python -m scaling run --config configs/lm_ladder.py:cpu --workdir workdir/lm_ladder

Variants:
  full   the real setting (cannot run here: TFDS data, TPU scale).
  cpu    the same grid shape on the synthetic world, in minutes on a 2-core CPU.
  micro  the same shape in seconds, for the tests.

Where the full setting comes from:
  * Law and fitting protocol: Hoffmann et al. (PAPERS.md); N counts every parameter,
    embeddings included, as Chinchilla does.
  * Sizes: presets lm_ladder_1 .. lm_ladder_8 (42M .. 948M parameters with T5's
    32,128-token vocabulary).
  * Data: C4 en from TFDS (`c4/en`, its validation split for the held-out loss), T5's
    SentencePiece vocabulary.
  * D: 1B .. 64B tokens, doubling. `grid.D_p` is shared by every size, so each size
    sees a different range of tokens per parameter: lm_ladder_1 24 .. 1,500,
    lm_ladder_8 1 .. 67; every size has a point near the compute-optimal 20.
    Chinchilla's window of ~5 .. 80 tokens per parameter would be the curve's
    `where="D_p >= 5 * N and D_p <= 80 * N"`, which the report's pre-run check does
    not accept yet.
  * Training: AdamW (b2 0.98, the codebase's constant; Chinchilla used 0.95), weight
    decay 0.1, peak learning rate 6e-4 for every size (approximated: Chinchilla tunes
    it per size), 1,000 warm-up steps, 20% cooldown with the 1-sqrt shape (Hägele et
    al.'s best). Sequences of 2,048 tokens, 256 per batch (~0.5M tokens); documents are
    truncated or padded, not packed, and D counts real tokens only.
"""
from scaling import config

WORLD = dict(seed=0, n_families=3, n_concepts=150)


def get_config(variant: str = "full"):
  cfg, set_variant = config.study_variant(
      "lm_ladder", variant, {"full": _full, "cpu": _cpu, "micro": _micro})
  # A causal LM reads sequences of pretrain.target_length tokens (input_length is unused).
  cfg.pretrain.update(objective="causal_lm", optimizer="adamw", schedule="wsd",
                      cooldown_fraction=0.2, cooldown_shape="1-sqrt")
  cfg.report.plots = ("ladder",)
  set_variant(cfg)
  return cfg


def _curves(holdout: str) -> dict:
  return {"loss": config.curve("chinchilla", ("N", "D_p"), "loss", holdout=holdout)}


def _full(cfg):
  cfg.data.update(source="tfds",
                  vocabulary="gs://t5-data/vocabs/cc_all.32000/sentencepiece.model")
  cfg.data.pretrain_sources = {"en": "c4/en"}
  cfg.mixtures = {"c4_en": {"en": 1.0}}
  cfg.model.update(dtype="bfloat16", remat="full")
  cfg.mesh = dict(data=-1, fsdp=8, tensor=1)
  cfg.pretrain.update(batch_size=256, target_length=2048, learning_rate=6e-4,
                      warmup_steps=1000, weight_decay=0.1, log_every=1000)
  cfg.eval.update(batch_size=64, lm_max_batches=64)  # 4,096 held-out documents
  cfg.grid.update(size=tuple(f"lm_ladder_{k}" for k in range(1, 9)), mixture=("c4_en",),
                  D_p=tuple(1_000_000_000 * 2**k for k in range(7)))  # 1B .. 64B
  cfg.fits.curves = _curves(holdout="largest:7")  # lm_ladder_8 at its 7 budgets


def _synthetic(cfg):
  # Text of two languages of different families, from both domains.
  cfg.data.update(source="synthetic", world=WORLD, vocab_size=1000)
  cfg.mixtures = {"text": {"xa": 1.0, "ya": 1.0}}
  cfg.grid.mixture = ("text",)


def _cpu(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=32, target_length=32, learning_rate=3e-3, warmup_steps=50,
                      log_every=200)
  cfg.eval.update(batch_size=100, lm_max_batches=4)
  cfg.grid.update(size=("lm_micro", "lm_tiny", "lm_small_cpu"),
                  D_p=(25_000, 50_000, 100_000, 200_000))
  cfg.fits.curves = _curves(holdout="largest:4")  # lm_small_cpu
  cfg.fits.bootstrap = 100


def _micro(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=8, target_length=32, learning_rate=3e-3, warmup_steps=5,
                      log_every=50)
  cfg.eval.update(batch_size=8, lm_max_batches=2)
  cfg.grid.update(size=("lm_micro", "lm_tiny"), D_p=(2_000, 4_000, 8_000))
  cfg.fits.curves = _curves(holdout="none")
  cfg.fits.bootstrap = 8
