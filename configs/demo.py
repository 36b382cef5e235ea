"""The demo study: Isik et al.'s question on the embedded synthetic world, on a CPU.

Does pretraining help xa -> ya translation, and does it matter what it is pretrained
on? Two tiny T5 sizes (tiny, and small with twice its parameters) are pretrained on
three mixtures and checkpointed at five D_p from 20k to 160k tokens;
every checkpoint is finetuned on the same D_f tokens of xa -> ya and scored with
sacrebleu on the test set. The mixtures give Isik et al.'s three regimes:

  aligned      xa and ya text, half of it parallel xa-ya text (a translation task,
               like T5's multi-task pretraining): BLEU and cross-entropy both improve.
  monolingual  xa and ya text alone: the languages but not the mapping between them.
               Downstream cross-entropy improves, BLEU does not (misaligned).
  unrelated    za and zb text and their parallel text, a family unrelated to both:
               neither improves.

All pretraining text is from the 'news' domain, finetuning and test data from
'fiction', so the finetuning pairs never occur in pretraining. Pretraining follows
T5's inverse-square-root schedule after a 10-step warm-up: a long warm-up leaves the
early checkpoints near scratch, and a constant rate stalls small_cpu at batch 16.
The sizes, budgets and finetune length keep the study near five minutes (about 310 s) on a
2-core CPU: with small_cpu as the second size it takes 400 s, and 30-step finetunes
leave tiny's aligned BLEU curve non-monotone.

    python -m scaling run --config configs/demo.py --workdir workdir/demo
"""
from scaling import config


def get_config():
  cfg = config.base_config()
  cfg.name = "demo"
  cfg.seed = 0
  cfg.data.world = dict(seed=0, n_families=3, n_concepts=150)
  cfg.data.vocab_size = 1000
  cfg.data.pretrain_domains = ("news",)
  cfg.data.finetune_domain = "fiction"
  cfg.mixtures = {
      "aligned": {"xa": 0.25, "ya": 0.25, "xa-ya": 0.5},
      "monolingual": {"xa": 0.5, "ya": 0.5},
      "unrelated": {"za": 0.25, "zb": 0.25, "za-zb": 0.5},
  }
  cfg.pretrain.update(batch_size=16, input_length=64, target_length=24,
                      learning_rate=2e-3, warmup_steps=10, schedule="rsqrt",
                      log_every=200)
  # 99 % of the fiction pairs fit 32 + 28 tokens (the longest are truncated).
  cfg.finetune.update(batch_size=32, input_length=32, target_length=28, steps=40,
                      learning_rate=2e-3, log_every=20)
  cfg.eval.update(split="test", max_examples=400, batch_size=200, max_decode_length=28)
  # Twice tiny's parameters (714k against 329k), at 1.6-1.8x its step time here.
  cfg.sizes = {"small": {"base": "tiny", "d_model": 96, "head_dim": 24, "d_ff": 256}}
  cfg.grid.size = ("tiny", "small")
  cfg.grid.mixture = ("aligned", "monolingual", "unrelated")
  cfg.grid.D_p = (20_000, 34_000, 57_000, 95_000, 160_000)
  cfg.grid.pair = ("xa-ya",)
  cfg.grid.D_f = (15_000,)
  cfg.fits.bootstrap = 200
  return cfg
