"""Finetunes trained together (one vmapped program) against one at a time.

Takes a study's finetune stages for one model size (the demo's by default: every
mixture's five D_p of `tiny`), saves freshly initialised weights as their pretraining
checkpoints (a finetune costs the same whatever weights it starts from), and runs the
stages as the runner would: `stages.run_finetune` for each in turn, then
`stages.run_finetunes` on groups of `--together`. Both are compiled in an untimed
warm-up first; the timed passes alternate, and the best of `--repeats` counts. It also
prints how far the two give the same weights, and a bare train step's time both ways
(whether the step is bound by launching programs, which groups remove, or by the
kernels themselves).

Run with ``python -m scaling bench finetunes`` or
``python -m scaling.bench_finetunes --size small_cpu --together 5``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from typing import Sequence

import jax
import numpy as np
from etils import epath

from scaling import checkpoint
from scaling import config as config_lib
from scaling import runner
from scaling import stages
from scaling import train


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  cfg = config_lib.load(args.config)
  cfg.grid.size = (args.size or cfg.grid.size[0],)
  with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
    ctx, plan = runner.prepare(cfg, tmp)
    finetunes = list(plan.finetunes)
    _save_initial_weights(ctx, plan)
    groups = [finetunes[i:i + args.together] for i in range(0, len(finetunes), args.together)]
    alone = lambda: [stages.run_finetune(ctx, s, "bench") for s in finetunes]
    together = lambda: [stages.run_finetunes(ctx, g, "bench") for g in groups]
    with _steps(cfg, 2):  # compiles both programs
      _timed(ctx, finetunes, alone)
      _timed(ctx, finetunes, together)
    best = {"alone": float("inf"), "together": float("inf")}
    for _ in range(args.repeats):
      best["alone"] = min(best["alone"], _timed(ctx, finetunes, alone))
      weights_alone = _weights(ctx, finetunes)
      best["together"] = min(best["together"], _timed(ctx, finetunes, together))
      weights_together = _weights(ctx, finetunes)
    steps = _bare_steps(ctx, finetunes[0], args.together)
  _print(cfg, finetunes, args, best, _max_difference(weights_alone, weights_together))
  print(f"  a bare train step (no input, no logs): {1e3 * steps['alone']:.0f} ms alone, "
        f"{1e3 * steps['together'] / args.together:.0f} ms per member in a group of "
        f"{args.together} ({steps['alone'] * args.together / steps['together']:.2f}x)")
  return 0


def _bare_steps(ctx: stages.Context, stage, together: int, n: int = 10) -> dict[str, float]:
  """Seconds per train step on one batch of the finetune's data, alone and as a group."""
  trainer = ctx.trainer(stage.source.train, "finetune")
  subset = ctx.data.finetune_subset(stage.pair, stage.D_f, ctx.cfg.finetune)
  with subset.batches(ctx.cfg.finetune.batch_size, ctx.cfg.seed,
                      ctx.input_shards(trainer, "finetune")) as batches:
    batch = next(batches)
  group = train.get_trainer_group(trainer, together)
  model = trainer.init(0).model
  return {"alone": _seconds_per_step(trainer, trainer.start_from(model), batch, n),
          "together": _seconds_per_step(group, group.start_from([model] * together), batch, n)}


def _seconds_per_step(trainer, state, batch, n: int) -> float:
  state, metrics = trainer.step(state, batch, 1e-3)  # compiled before the clock starts
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(n):
    state, metrics = trainer.step(state, batch, 1e-3)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / n


def _save_initial_weights(ctx: stages.Context, plan) -> None:
  for i, train_stage in enumerate(plan.trains):
    trainer = ctx.trainer(train_stage, "pretrain")
    model = trainer.init(ctx.cfg.seed + i).model
    for point in stages.save_points(ctx.cfg, train_stage):
      checkpoint.save(stages.stage_dir(ctx.workdir, train_stage), point, dict(model=model),
                      dict(step=0, tokens=point, flops=0.0, wall_s=0.0))


@contextlib.contextmanager
def _steps(cfg, steps: int):
  kept = cfg.finetune.steps
  cfg.finetune.steps = steps
  try:
    yield
  finally:
    cfg.finetune.steps = kept


def _timed(ctx: stages.Context, finetunes, run) -> float:
  for stage in finetunes:  # every run starts from nothing saved
    checkpoint.delete_all(stages.stage_dir(ctx.workdir, stage))
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def _weights(ctx: stages.Context, finetunes) -> list:
  trainer = ctx.trainer(finetunes[0].source.train, "finetune")
  abstract = dict(model=trainer.abstract_model_state)
  return [jax.device_get(checkpoint.restore(stages.stage_dir(ctx.workdir, s),
                                            ctx.cfg.finetune.steps, abstract)[0]["model"].params)
          for s in finetunes]


def _max_difference(a: list, b: list) -> float:
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(diffs))


def _print(cfg, finetunes, args, best: dict, difference: float) -> None:
  n, steps = len(finetunes), int(cfg.finetune.steps)
  print(f"{n} finetunes of {cfg.grid.size[0]} ({args.config}), {steps} steps each, batch "
        f"{cfg.finetune.batch_size}, on {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s); best of {args.repeats}, compiled beforehand")
  for name, what in (("alone", "one at a time"), ("together", f"{args.together} together")):
    print(f"  {what:<14} {best[name]:7.2f} s   {n * steps / best[name]:7.1f} finetune steps/s")
  print(f"  speed-up       {best['alone'] / best['together']:.2f}x")
  print(f"  weights: largest difference between the two {difference:.3g}")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m scaling.bench_finetunes", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/demo.py", help="a study config")
  parser.add_argument("--size", default="", help="one of its grid.size (default: the first)")
  parser.add_argument("--together", type=int, default=5, help="finetunes per group")
  parser.add_argument("--repeats", type=int, default=1, help="timed passes (the best counts)")
  return parser


if __name__ == "__main__":
  sys.exit(main())
