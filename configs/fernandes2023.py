"""Fernandes et al. 2023, "Scaling Laws for Multilingual Neural Machine Translation"
(arXiv 2302.09650).

Encoder-decoder models of 8 sizes are trained from scratch on two translation pairs,
pair 1 sampled with weight p and pair 2 with 1 - p, and every model is evaluated on
each pair. Per pair i the joint law `L_i(N; p) = beta_{p,i} * N**-alpha_i + L_inf_i`
holds with only the factor beta depending on p, so `f_i(p) = (beta_{1,i} /
beta_{p,i})**(1/alpha_i)` is the share of the model pair i effectively gets. A row's
`p` is the weight of the pair it is evaluated on (p of pair 1, 1 - p of pair 2); a
pair at weight 0 is not trained on and is left out of its fit.

    python -m scaling run --config configs/fernandes2023.py:cpu --workdir workdir/fernandes

Variants:
  full   the paper's setting (cannot run here: TFDS data, TPU scale).
  cpu    the same grid shape on the synthetic world, in minutes on a 2-core CPU.
  micro  the same shape in seconds, for the tests.

Where the full setting comes from:
  * Sizes: 8 encoder-decoders from ~20M to ~1B non-embedding parameters (PAPERS.md):
    presets ladder_1 .. ladder_8 (20.7M .. 991M non-embedding parameters). N is the
    non-embedding count, as in the paper.
  * Weights p in {0, .05, .1, .3, .5, .7, .9, .95, 1} (PAPERS.md); the largest size is
    held out and predicted from the seven others.
  * Pairs: the paper's data is in-house; here two English-to-many WMT pairs from TFDS
    (WMT14 en -> de, en -> fr; test sets newstest2014), the English-to-many direction.
    A dissimilar second language (e.g. en -> zh, wmt19_translate/zh-en) needs a
    vocabulary that covers it, such as mT5's, in place of T5's en/de/fr/ro one.
  * Training: Adafactor with T5's inverse-sqrt schedule, batch ~500K tokens, one
    budget of 2e10 tokens per model: the paper's optimizer family, its exact schedule
    and step count approximated.
"""
from scaling import config

WORLD = dict(seed=0, n_families=3, n_concepts=150)


def get_config(variant: str = "full"):
  cfg, set_variant = config.study_variant(
      "fernandes2023", variant, {"full": _full, "cpu": _cpu, "micro": _micro})
  cfg.pretrain.objective = "translation"  # from scratch on the weighted pairs
  cfg.report.plots = ("fernandes",)
  set_variant(cfg)
  return cfg


def _curves(holdout: str) -> dict:
  return {"ce": config.curve("fernandes_joint", ("N_nonembed", "p"), "ce", group_by=("pair",),
                             where="p > 0", holdout=holdout)}


def _full(cfg):
  cfg.data.update(source="tfds",
                  vocabulary="gs://t5-data/vocabs/cc_all.32000/sentencepiece.model")
  cfg.data.translation_sources = {"en-de": "wmt14_translate/de-en",
                                  "en-fr": "wmt14_translate/fr-en"}
  cfg.model.update(dtype="bfloat16", remat="full")
  cfg.mesh = dict(data=-1, fsdp=8, tensor=1)
  cfg.pretrain.update(batch_size=16_384, input_length=128, target_length=128,
                      optimizer="adafactor", learning_rate=1e-2, warmup_steps=10_000,
                      schedule="rsqrt", log_every=1000)
  cfg.eval.update(split="test", max_examples=3000, batch_size=256, max_decode_length=128)
  cfg.grid.update(size=tuple(f"ladder_{k}" for k in range(1, 9)),
                  p=(0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0),
                  D_p=(20_000_000_000,), pair=("en-de", "en-fr"))
  cfg.fits.curves = _curves(holdout="largest:8")  # ladder_8 at its 8 weights p > 0


def _synthetic(cfg):
  # Two pairs from one source language: xa -> ya (another family) and xa -> xb (a
  # sister language), the English-to-many setting.
  cfg.data.update(source="synthetic", world=WORLD, vocab_size=1000, finetune_domain="fiction")
  cfg.pretrain.update(optimizer="adamw", schedule="rsqrt", input_length=40, target_length=32)
  cfg.grid.pair = ("xa-ya", "xa-xb")


def _cpu(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=32, learning_rate=2e-3, warmup_steps=100, log_every=200)
  cfg.eval.update(split="test", max_examples=150, batch_size=150, max_decode_length=32)
  cfg.grid.update(size=("micro", "tiny", "small_cpu"), p=(0.0, 0.25, 0.5, 0.75, 1.0),
                  D_p=(100_000,))
  cfg.fits.curves = _curves(holdout="largest:4")  # small_cpu at its 4 weights p > 0
  cfg.fits.bootstrap = 100


def _micro(cfg):
  _synthetic(cfg)
  cfg.pretrain.update(batch_size=8, learning_rate=2e-3, warmup_steps=10, log_every=50)
  cfg.eval.update(split="test", max_examples=16, batch_size=8, max_decode_length=8)
  cfg.grid.update(size=("micro", "tiny"), p=(0.0, 0.5, 1.0), D_p=(2_000,))
  cfg.fits.curves = _curves(holdout="none")
  cfg.fits.bootstrap = 8
