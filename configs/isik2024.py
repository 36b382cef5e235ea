"""Isik et al. 2024, "Scaling Laws for Downstream Task Performance" (arXiv 2402.04177).

T5 models are pretrained with span corruption on language mixtures, checkpointed at
several D_p; every checkpoint is finetuned on a translation pair with D_f tokens and
scored on its test set. Per (size, mixture, pair, D_f) curve, BLEU follows the log-law
`(log(A * D_p**alpha))**beta` and downstream cross-entropy `E + A / D_p**alpha`; both
are fitted on the four smallest D_p and predict the rest. With pretraining data
misaligned with the pair, BLEU breaks the law while cross-entropy still improves.

    python -m scaling run --config configs/isik2024.py:cpu --workdir workdir/isik

Variants:
  full   the paper's setting (cannot run here: TFDS data, TPU scale).
  cpu    the same grid shape on the synthetic world, in minutes on a 2-core CPU.
  micro  the same shape in seconds, for the tests.

Where the full setting comes from (PAPERS.md; (s) = seen through a secondary source):
  * Model: T5-3B (24+24 layers, d_model 1024, 32 heads x 128, d_ff 16384), preset
    `isik_t5_3b`; its gated-GELU blocks hold ~3.7B parameters, not the original 2.9B.
    The paper's T5-770M runs are not in the grid.
  * Vocabulary: mT5's SentencePiece model (250,000 pieces + 100 sentinels).
  * Pretraining: mC4 en / de / fr / ro from TFDS `c4/multilingual`, alone and as 50/50
    per-batch mixtures with en, and en/fr at 30/70 and 70/30 (s); batch 256 x 512
    input tokens (114 span-corruption targets, T5's lengths), 1M steps, Adafactor,
    `1/sqrt(max(step, 1e4))` (s) = rsqrt with peak 0.01 and 10K warm-up steps (the
    warm-up here is linear where T5 holds 0.01 flat).
  * D_p: checkpoints at 2.5B .. 160B tokens, doubling (~16K .. 1M steps; tokens count
    encoder inputs plus targets). The paper's checkpoint spacing is not recorded;
    ro, pretrained for 510K steps in the paper, runs the full 1M here.
  * Finetuning: WMT-17 en-de, WMT-15 en-fr, WMT-16 en-ro (TFDS), en -> xx; batch 128,
    300 steps, constant learning rate (s) (1e-3, T5's finetuning rate).
  * D_f: the paper's subsets are per pair (en-de 6M / 31M / 3B, en-fr 42M / 210M / 21B,
    en-ro 625K / 3M / 312M tokens (s)). `grid.D_f` crosses every pair, so the grid
    holds their union: each pair also runs at the other pairs' sizes (a superset of
    the paper's cells; sizes past a pair's full set repeat its data). Likewise every
    mixture is finetuned on every pair.
"""
from scaling import config

WORLD = dict(seed=0, n_families=3, n_concepts=150)
MT5_VOCAB = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"


def get_config(variant: str = "full"):
  cfg, set_variant = config.study_variant(
      "isik2024", variant, {"full": _full, "cpu": _cpu, "micro": _micro})
  cfg.pretrain.objective = "span_corruption"
  cfg.fits.curves = config.isik_curves()  # BLEU log-law + CE power law, smallest:4
  cfg.report.plots = ("curves",)
  set_variant(cfg)
  return cfg


def _mc4(lang: str) -> dict:
  return {"name": "c4/multilingual", "splits": {"train": lang, "validation": f"{lang}-validation"}}


def _full(cfg):
  cfg.data.update(source="tfds", vocabulary=MT5_VOCAB)
  cfg.data.pretrain_sources = {lang: _mc4(lang) for lang in ("en", "de", "fr", "ro")}
  cfg.data.translation_sources = {"en-de": "wmt17_translate/de-en",
                                  "en-fr": "wmt15_translate/fr-en",
                                  "en-ro": "wmt16_translate/ro-en"}
  cfg.mixtures = {
      "en": {"en": 1.0}, "de": {"de": 1.0}, "fr": {"fr": 1.0}, "ro": {"ro": 1.0},
      "en_de": {"en": 0.5, "de": 0.5}, "en_fr": {"en": 0.5, "fr": 0.5},
      "en_ro": {"en": 0.5, "ro": 0.5},
      "en30_fr70": {"en": 0.3, "fr": 0.7}, "en70_fr30": {"en": 0.7, "fr": 0.3},
  }
  cfg.model.update(dtype="bfloat16", remat="full")
  cfg.mesh = dict(data=-1, fsdp=8, tensor=1)
  cfg.pretrain.update(batch_size=256, input_length=512, target_length=114,
                      optimizer="adafactor", learning_rate=1e-2, warmup_steps=10_000,
                      schedule="rsqrt", log_every=1000)
  cfg.finetune.update(batch_size=128, input_length=512, target_length=512, steps=300,
                      optimizer="adafactor", learning_rate=1e-3, warmup_steps=0,
                      schedule="constant", log_every=50)
  # newstest2017 en-de has 3,004 sentences, the largest of the three test sets.
  cfg.eval.update(split="test", max_examples=3004, batch_size=128, max_decode_length=256)
  cfg.grid.update(
      size=("isik_t5_3b",), mixture=tuple(cfg.mixtures),
      D_p=tuple(2_500_000_000 * 2**k for k in range(7)),  # 2.5B .. 160B
      pair=("en-de", "en-fr", "en-ro"),
      D_f=(625_000, 3_000_000, 6_000_000, 31_000_000, 42_000_000, 210_000_000,
           312_000_000, 3_000_000_000, 21_000_000_000))


def _synthetic(cfg):
  # Pretraining on 'news', finetuning and testing on 'fiction': the finetuning pairs
  # never occur in pretraining. Each mixture is half monolingual text, of the pair's
  # two languages (aligned, like en/de 50/50 for en-de) or of an unrelated family
  # (misaligned), and half their parallel text (like the bitext in T5's multi-task
  # mixture or in web corpora): without it, models this small learn the translation
  # from the finetuning set alone (see the README's demo).
  cfg.data.update(source="synthetic", world=WORLD, vocab_size=1000,
                  pretrain_domains=("news",), finetune_domain="fiction")
  cfg.mixtures = {"aligned": {"xa": 0.25, "ya": 0.25, "xa-ya": 0.5},
                  "misaligned": {"za": 0.25, "zb": 0.25, "za-zb": 0.5}}
  cfg.grid.update(mixture=("aligned", "misaligned"), pair=("xa-ya",))


def _cpu(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=32, input_length=64, target_length=24,
                      learning_rate=2e-3, warmup_steps=100, log_every=200)
  cfg.finetune.update(batch_size=32, input_length=40, target_length=32, steps=100,
                      learning_rate=1e-3, log_every=100)
  cfg.eval.update(split="test", max_examples=200, batch_size=200, max_decode_length=32)
  cfg.grid.update(size=("small_cpu",), D_p=(25_000, 50_000, 100_000, 200_000, 400_000),
                  D_f=(15_000,))
  cfg.fits.bootstrap = 100


def _micro(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=8, input_length=64, target_length=24,
                      learning_rate=2e-3, warmup_steps=10, log_every=50)
  cfg.finetune.update(batch_size=8, input_length=40, target_length=32, steps=4,
                      learning_rate=1e-3, log_every=50)
  cfg.eval.update(split="test", max_examples=16, batch_size=8, max_decode_length=8)
  cfg.grid.update(size=("micro",), D_p=(1_500, 3_000, 4_500), D_f=(3_000,))
  for curve in cfg.fits.curves.values():
    curve.holdout = "none"  # three D_p: fit them all
  cfg.fits.bootstrap = 8
