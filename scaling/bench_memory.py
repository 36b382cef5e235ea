"""Per-device memory of a large model's train step on an abstract 32-device mesh.

Compiles the runtime's own `train.Trainer` step (the function every study runs) for
the `isik_t5_3b` size with Adafactor at Isik et al.'s batch, and prints what XLA's
memory analysis says each device holds: arguments (train state and batch), outputs
(the new state, aliased to the donated old one), temporaries, and the total. Nothing
is allocated: the mesh is 32 virtual CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=32``, set for a subprocess) and
the program is only lowered and compiled.

Batch: 256 sequences, encoder inputs of 512 tokens and decoder targets of 114: T5's
span corruption (15% noise, mean span 3) turns 568 tokens into 512 inputs and 114
targets, so Isik et al.'s "256 x 512" is the encoder side.

The CPU compiler schedules for memory here (``xla_cpu_scheduler_type``): its default
scheduler favours concurrency and runs the rematerialised forward passes early,
which hides what remat saves; TPU and GPU compilers schedule for memory themselves.
The figures are XLA:CPU's for the same partitioned program, an estimate of a TPU
v4 chip's (32 GiB HBM) figures, not a measurement on one.

Run with ``python -m scaling bench memory`` (defaults), or
``python -m scaling.bench_memory --mesh fsdp=32 --remat full ...`` to choose.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import subprocess
import sys
from typing import Sequence

DEVICES = 32
V4_HBM_GIB = 32.0
GIB = 2.0**30
# Per compile: XLA:CPU's memory-minimising scheduler (see the module docstring).
CPU_MEMORY_SCHEDULING = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


@dataclasses.dataclass(frozen=True)
class Setting:
  mesh: str          # 'fsdp=32', 'data=4,fsdp=8'
  remat: str
  param_dtype: str


@dataclasses.dataclass
class Figures:
  arguments: int
  outputs: int
  aliased: int
  temporaries: int

  @property
  def total(self) -> int:
    """Peak per device: inputs, outputs not written in place of a donated input, and
    temporaries."""
    return self.arguments + self.outputs - self.aliased + self.temporaries


def parse_mesh(text: str):
  from scaling import mesh as mesh_lib
  try:
    axes = dict(part.split("=") for part in text.split(","))
    return mesh_lib.MeshConfig(**{axis: int(n) for axis, n in axes.items()})
  except (ValueError, TypeError) as e:
    raise argparse.ArgumentTypeError(
        f"--mesh {text!r}: expected e.g. 'fsdp=32' or 'data=4,fsdp=8' ({e})") from e


def abstract_batch(batch: int, inputs: int, targets: int) -> dict:
  import jax
  import jax.numpy as jnp
  tokens = lambda length: jax.ShapeDtypeStruct((batch, length), jnp.int32)
  return dict(encoder_input_tokens=tokens(inputs), decoder_input_tokens=tokens(targets),
              decoder_target_tokens=tokens(targets),
              decoder_loss_weights=jax.ShapeDtypeStruct((batch, targets), jnp.float32))


def step_memory(trainer, batch: dict) -> Figures:
  """Per-device memory of `trainer`'s compiled train step for batches like `batch`."""
  analysis = trainer.lower_step(batch).compile(CPU_MEMORY_SCHEDULING).memory_analysis()
  return Figures(analysis.argument_size_in_bytes, analysis.output_size_in_bytes,
                 analysis.alias_size_in_bytes, analysis.temp_size_in_bytes)


def measure(setting: Setting, args) -> Figures:
  import jax
  from models import sizes
  from scaling import mesh as mesh_lib
  from scaling import train
  size = sizes.get(args.size)
  mesh_cfg = parse_mesh(setting.mesh)
  mesh_lib.validate(mesh_cfg, size, jax.device_count(), batch_size=args.batch)
  model_cfg = train.ModelConfig(size, dtype=args.dtype, param_dtype=setting.param_dtype,
                                remat=setting.remat)
  step_cfg = train.StepConfig(args.optimizer, 1e-2, 10_000, "rsqrt", 0.0)
  trainer = train.Trainer(model_cfg, step_cfg, mesh_lib.make_mesh(mesh_cfg))
  return step_memory(trainer, abstract_batch(args.batch, args.inputs, args.targets))


def print_table(rows: list[tuple[Setting, Figures]], args) -> None:
  from models import accounting, sizes
  params = accounting.param_counts(sizes.get(args.size))["total"]
  print(f"{args.size} ({params / 1e9:.2f}B parameters), {args.optimizer}, batch {args.batch} x "
        f"({args.inputs} encoder + {args.targets} decoder) tokens, activations {args.dtype}")
  print(f"per-device GiB on {DEVICES} devices (XLA:CPU memory analysis of train.Trainer's "
        f"step; fits = total <= {V4_HBM_GIB:.0f} GiB, a TPU v4 chip)\n")
  print(f"{'mesh':<14}{'remat':<7}{'params':<10}{'arguments':>10}{'outputs':>9}"
        f"{'aliased':>9}{'temps':>9}{'total':>9}  fits")
  for setting, fig in rows:
    gib = lambda n: f"{n / GIB:>9.2f}"
    fits = "yes" if fig.total <= V4_HBM_GIB * GIB else "no"
    print(f"{setting.mesh:<14}{setting.remat:<7}{setting.param_dtype:<10}"
          f"{fig.arguments / GIB:>10.2f}{gib(fig.outputs)}{gib(fig.aliased)}"
          f"{gib(fig.temporaries)}{gib(fig.total)}  {fits}", flush=True)


def run_here(args) -> list[tuple[Setting, Figures]]:
  """Measures every setting in this process (which must see DEVICES devices)."""
  import jax
  if jax.device_count() != DEVICES:
    raise SystemExit(f"needs {DEVICES} devices, this process has {jax.device_count()}: "
                     f"run without --here, or set XLA_FLAGS="
                     f"--xla_force_host_platform_device_count={DEVICES}")
  settings = [Setting(*s) for s in itertools.product(args.mesh, args.remat, args.param_dtype)]
  rows = []
  for setting in settings:
    rows.append((setting, measure(setting, args)))
  print_table(rows, args)
  return rows


def run_in_subprocess(argv: Sequence[str]) -> int:
  """Re-runs this benchmark in a fresh process with DEVICES virtual CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                       f"--xla_force_host_platform_device_count={DEVICES}".strip())
  command = [sys.executable, "-m", "scaling.bench_memory", "--here", *argv]
  return subprocess.run(command, env=env, check=False).returncode


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="scaling bench memory", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="isik_t5_3b")
  parser.add_argument("--optimizer", default="adafactor", choices=["adafactor", "adamw"])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--inputs", type=int, default=512, help="encoder input length")
  parser.add_argument("--targets", type=int, default=114, help="decoder target length")
  parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"],
                      help="activation dtype (T5X's default: bfloat16)")
  parser.add_argument("--mesh", nargs="+", default=["fsdp=32", "data=4,fsdp=8"])
  parser.add_argument("--remat", nargs="+", default=["none", "full"])
  parser.add_argument("--param-dtype", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--here", action="store_true",
                      help=f"measure in this process (it must have {DEVICES} devices)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Prints the table. ``argv`` holds this benchmark's own options (None: defaults)."""
  argv = [] if argv is None else list(argv)
  args = _parser().parse_args(argv)
  if not args.here:
    return run_in_subprocess(argv)
  run_here(args)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
