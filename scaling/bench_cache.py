"""What the workdir's XLA compilation cache saves a stage at start-up.

Times, each in a fresh process, a trainer's start: building its train state (compiling
`init`) and the first train step (compile + run), first with an empty cache folder
(cold), then with the folder the cold run filled (warm), as a grid's next worker or a
re-run would find it. The cache is set the way the runner sets it
(`runner.use_compilation_cache`).

Run with ``python -m scaling bench cache`` or
``python -m scaling.bench_cache --size tiny --batch 16``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Sequence


def start_up(size_name: str, batch: int, workdir: str) -> dict:
  """Seconds to build a trainer's state and to take its first step, in this process."""
  import jax
  from etils import epath
  from models import sizes
  from scaling import mesh as mesh_lib
  from scaling import runner
  from scaling import train
  runner.use_compilation_cache(epath.Path(workdir))
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=-1, fsdp=1, tensor=1))
  trainer = train.Trainer(train.ModelConfig(sizes.get(size_name), "float32", "float32", "none"),
                          train.StepConfig("adafactor", 1e-2, 10_000, "rsqrt", 0.0), mesh)
  begin = time.perf_counter()
  state = jax.block_until_ready(trainer.init(0))
  built = time.perf_counter()
  state, metrics = trainer.step(state, _batch(batch), 1e-2)
  jax.block_until_ready((state, metrics))
  stepped = time.perf_counter()
  return {"init_s": built - begin, "first_step_s": stepped - built}


def _batch(rows: int) -> dict:
  import numpy as np
  tokens = lambda length: np.ones((rows, length), np.int32)
  return dict(encoder_input_tokens=tokens(32), decoder_input_tokens=tokens(16),
              decoder_target_tokens=tokens(16),
              decoder_loss_weights=np.ones((rows, 16), np.float32))


def _in_fresh_process(args, workdir: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("SCALING_COMPILATION_CACHE", None)
  code = ("import json, sys; from scaling import bench_cache; "
          f"print(json.dumps(bench_cache.start_up({args.size!r}, {args.batch}, {workdir!r})))")
  out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  with tempfile.TemporaryDirectory() as workdir:
    cold = _in_fresh_process(args, workdir)
    warm = [_in_fresh_process(args, workdir) for _ in range(args.repeats)]
    files = len(os.listdir(os.path.join(workdir, "xla_cache")))
  best = {k: min(w[k] for w in warm) for k in cold}
  print(f"{args.size}, batch {args.batch}, CPU, each start in a fresh process "
        f"({files} programs in the cache; warm: best of {args.repeats})")
  for key, what in (("init_s", "build train state"), ("first_step_s", "first train step")):
    print(f"  {what:<18} cold {cold[key]:6.2f} s   warm {best[key]:6.2f} s   "
          f"{cold[key] / best[key]:5.1f}x")
  total_cold, total_warm = sum(cold.values()), sum(best.values())
  print(f"  {'both':<18} cold {total_cold:6.2f} s   warm {total_warm:6.2f} s   "
        f"{total_cold / total_warm:5.1f}x")
  return 0


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m scaling.bench_cache", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="micro", help="a models/sizes.py preset")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=2, help="warm starts (the best counts)")
  return parser


if __name__ == "__main__":
  sys.exit(main())
