"""What each stage of a study does: pretrain, finetune, evaluate.

Each stage reads its inputs from the workdir, writes its outputs there, and knows
whether it is complete, so the runner can skip it on a re-run.

    <workdir>/pretrain/<key>/    orbax checkpoints, one step per D_p (tokens)
    <workdir>/finetune/<key>/    orbax checkpoint of the finetuned model
    <workdir>/results/<key>.json one row per evaluation
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from etils import epath

from models import accounting
from models import sizes as sizes_lib
from scaling import checkpoint
from scaling import grid
from scaling import metrics
from scaling import results
from scaling import train
from scaling import inputs


@dataclasses.dataclass
class Context:
  """What every stage of one study shares."""
  cfg: ml_collections.ConfigDict
  workdir: epath.Path
  data: inputs.StudyInputs
  mesh: jax.sharding.Mesh
  peak_flops: float | None = None

  def size(self, name: str) -> sizes_lib.ModelSize:
    return dataclasses.replace(sizes_lib.get(name), vocab_size=self.data.model_vocab_size,
                               dropout_rate=float(self.cfg.model.dropout_rate))

  def trainer(self, size_name: str, section: str) -> train.Trainer:
    model_cfg = train.ModelConfig(self.size(size_name), self.cfg.model.dtype,
                                  self.cfg.model.param_dtype)
    return train.get_trainer(model_cfg, train.StepConfig.from_section(self.cfg[section]),
                             self.mesh, int(self.cfg.seed))


def pretrain_dir(workdir: epath.Path, stage: grid.Pretrain) -> epath.Path:
  return workdir / "pretrain" / stage.key


def finetune_dir(workdir: epath.Path, stage: grid.Finetune) -> epath.Path:
  return workdir / "finetune" / stage.key


# ---------------------------------------------------------------- pretrain

def pretrain_missing(workdir: epath.Path, stage: grid.Pretrain) -> list[int]:
  saved = set(checkpoint.steps(pretrain_dir(workdir, stage)))
  return [d for d in stage.D_p if d not in saved]


def run_pretrain(ctx: Context, stage: grid.Pretrain, label: str) -> None:
  """One run per (size, mixture); saves a checkpoint when tokens seen reach each D_p.

  A run interrupted after some checkpoints resumes from the last one before the
  first missing D_p, replaying the deterministic data stream up to it.
  """
  targets = pretrain_missing(ctx.workdir, stage)
  trainer = ctx.trainer(stage.size, "pretrain")
  size = trainer.model_cfg.size
  state, seen = _pretrain_start(ctx, stage, trainer, targets[0])
  batches = ctx.data.pretrain_batches(stage.mixture, ctx.cfg.pretrain, seed=ctx.cfg.seed)
  _skip(batches, int(state.step))
  progress = train.Progress(label, ctx.cfg.pretrain.log_every, peak_flops=ctx.peak_flops)
  t0 = time.perf_counter() - seen["wall_s"]
  tokens, flops, step = seen["tokens"], seen["flops"], int(state.step)
  while targets:
    batch = next(batches)
    state, step_metrics = trainer.step(state, batch)
    n, f = train.batch_tokens(batch), train.batch_flops(size, batch)
    tokens, flops, step = tokens + n, flops + f, step + 1
    progress.update(step, step_metrics, n, f, force=tokens >= targets[-1])
    while targets and tokens >= targets[0]:
      d_p = targets.pop(0)
      checkpoint.save(pretrain_dir(ctx.workdir, stage), d_p,
                      dict(model=state.model, optimizer=state.optimizer),
                      dict(tokens=tokens, flops=flops, wall_s=time.perf_counter() - t0, step=step))
      print(f"{label}  checkpoint D_p={d_p:,} saved at {tokens:,} tokens", flush=True)


def _pretrain_start(ctx: Context, stage: grid.Pretrain, trainer: train.Trainer, first_missing: int):
  out = pretrain_dir(ctx.workdir, stage)
  earlier = [d for d in checkpoint.steps(out) if d < first_missing]
  if not earlier:
    return trainer.init(ctx.cfg.seed), dict(tokens=0, flops=0.0, wall_s=0.0)
  items, meta = checkpoint.restore(out, max(earlier), dict(
      model=trainer.abstract_model_state, optimizer=trainer.abstract_state.optimizer))
  state = train.TrainState(items["model"], **items["optimizer"])
  return state, dict(tokens=meta["tokens"], flops=meta["flops"], wall_s=meta["wall_s"])


def _skip(batches: Iterator, n: int) -> None:
  for _ in range(n):
    next(batches)


# ---------------------------------------------------------------- finetune

def finetune_complete(workdir: epath.Path, stage: grid.Finetune) -> bool:
  return bool(checkpoint.steps(finetune_dir(workdir, stage)))


def run_finetune(ctx: Context, stage: grid.Finetune, label: str) -> None:
  """Starts from the pretraining checkpoint at D_p; trains on D_f tokens of the pair."""
  section = ctx.cfg.finetune
  trainer = ctx.trainer(stage.pretrain.size, "finetune")
  items, _ = checkpoint.restore(pretrain_dir(ctx.workdir, stage.pretrain), stage.D_p,
                                dict(model=trainer.abstract_model_state))
  state = trainer.start_from(items["model"])
  subset = ctx.data.finetune_subset(stage.pair, stage.D_f, section)
  batches = subset.batches(section.batch_size, seed=ctx.cfg.seed)
  progress = train.Progress(label, section.log_every, total_steps=section.steps,
                            peak_flops=ctx.peak_flops)
  t0 = time.perf_counter()
  state, tokens, flops = train.train(
      trainer, state, batches, until=lambda step, _: step >= section.steps, progress=progress)
  checkpoint.save(finetune_dir(ctx.workdir, stage), section.steps, dict(model=state.model),
                  dict(tokens=tokens, flops=flops, wall_s=time.perf_counter() - t0,
                       examples=subset.n_examples, subset_tokens=subset.n_tokens))


# ---------------------------------------------------------------- evaluate

def evaluate_complete(workdir: epath.Path, stage: grid.Evaluate) -> bool:
  row = results.read_row(workdir, stage.key)
  return row is not None and row.get("status") == "ok"


def run_evaluate(ctx: Context, stage: grid.Evaluate, label: str) -> dict:
  """Test-set cross-entropy and sacrebleu BLEU / chrF on decoded text; writes the row."""
  fin = stage.finetune
  trainer = ctx.trainer(fin.pretrain.size, "finetune")
  t0 = time.perf_counter()
  fin_dir = finetune_dir(ctx.workdir, fin)
  items, fin_meta = checkpoint.restore(fin_dir, checkpoint.steps(fin_dir)[-1],
                                       dict(model=trainer.abstract_model_state))
  model_state = items["model"]
  ecfg = ctx.cfg.eval
  ce = train.mean_cross_entropy(trainer, model_state, ctx.data.eval_batches(fin.pair, ecfg))
  hypotheses, references = translate(ctx, trainer, model_state, fin.pair)
  bleu = metrics.corpus_bleu(hypotheses, references)
  chrf = metrics.corpus_chrf(hypotheses, references)
  pre_meta = checkpoint.read_meta(pretrain_dir(ctx.workdir, fin.pretrain), fin.D_p)
  size = trainer.model_cfg.size
  counts = accounting.param_counts(size)
  row = dict(
      key=stage.key, status="ok", size=fin.pretrain.size, N=counts["total"],
      N_nonembed=counts["non_embedding"], mixture=fin.pretrain.mixture, pair=fin.pair,
      D_p=fin.D_p, D_p_seen=pre_meta["tokens"], D_f=fin.D_f, ce=ce, bleu=bleu, chrf=chrf,
      flops=pre_meta["flops"] + fin_meta["flops"],
      wall_s=pre_meta["wall_s"] + fin_meta["wall_s"] + (time.perf_counter() - t0),
      pretrain_key=fin.pretrain.key, finetune_key=fin.key,
      config_hash=grid.stable_hash(stage.fields))
  results.write_row(ctx.workdir, row)
  print(f"{label}  ce {ce:.3f}  BLEU {bleu:.2f}  chrF {chrf:.2f}  "
        f"e.g. {hypotheses[0]!r} <- ref {references[0]!r}", flush=True)
  return row


def translate(ctx: Context, trainer: train.Trainer, model_state,
              pair: str) -> tuple[list[str], list[str]]:
  """Greedy-decodes the eval split and detokenizes: (hypotheses, references)."""
  ecfg = ctx.cfg.eval
  examples = ctx.data.eval_examples(pair, ecfg)
  hypotheses = []
  for start in range(0, len(examples.inputs_BS), ecfg.batch_size):
    chunk = examples.inputs_BS[start:start + ecfg.batch_size]
    padded = _pad_rows(chunk, ecfg.batch_size)
    tokens_BT = trainer.decode(model_state, padded, ecfg.max_decode_length)[:len(chunk)]
    hypotheses.extend(ctx.data.detokenize(row) for row in tokens_BT)
  return hypotheses, list(examples.references)


def _pad_rows(rows_BS: np.ndarray, batch_size: int) -> np.ndarray:
  """Pads a short last batch with empty rows so decoding compiles once."""
  if len(rows_BS) == batch_size:
    return rows_BS
  pad = np.zeros((batch_size - len(rows_BS), rows_BS.shape[1]), rows_BS.dtype)
  return np.concatenate([rows_BS, pad])
