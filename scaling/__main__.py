"""Command line: python -m scaling {run,status,table,fit,bench} ...

  run     --config configs/demo.py --workdir DIR   run or resume a study
          (--config configs/ghorbani2021.py:cpu picks a variant; multi-host:
           --coordinator_address HOST:PORT --num_processes N --process_id I;
           on a Ray cluster: --executor ray [--address auto|HOST:PORT], each stage
           a Ray task asking for cfg.resources; without --address, a local cluster)
  status  --config configs/demo.py --workdir DIR   which stages are complete
  table   --workdir DIR                            print the results table
  fit     --config configs/demo.py --workdir DIR   re-fit and rewrite fits.* and plots/
  bench   models                                   print model throughput / MFU figures
  bench   memory                                   per-device memory of the T5-3B train step
  bench   cache                                    stage start-up with a cold / warm XLA cache
  bench   finetunes                                finetunes trained together vs one at a time

Exit status of `run`: 0 all stages done; 1 some stage failed (the rest ran; re-run to
retry it); 2 config error (with --executor ray also: no Ray cluster at --address, or no
node that can hold a stage's resources); 3 the processes of a multi-host run could not join;
75 (EX_TEMPFAIL) preempted: on SIGTERM, or a TPU preemption notice, pretraining saved
a periodic checkpoint at the next step and waited for it (any other stage just
stopped); run the same command again to resume mid-stage.

Several `run`s may share one workdir: each stage runs in one of them at a time (a lease in
<workdir>/leases/, taken over once its heartbeat is SCALING_LEASE_TIMEOUT_S old, default 60).
XLA's compiled programs are cached in <workdir>/xla_cache unless JAX_COMPILATION_CACHE_DIR
names another folder; SCALING_COMPILATION_CACHE=off turns that off, =FOLDER moves it.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # seqio's TensorFlow is chatty


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command == "run":
    _check_executor_flags(parser, args)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)  # seqio warns on every synthetic task
  if args.command == "bench":
    return _bench(args.what)
  from scaling import config as config_lib
  if args.command == "table":
    from scaling import results
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_columns", 30):
      print(results.load(args.workdir).drop(columns=["pretrain_key", "finetune_key", "error"]))
    return 0
  from scaling import mesh as mesh_lib
  from scaling import preemption
  try:
    if args.command == "run" and args.executor == "local":  # before anything touches a device
      mesh_lib.initialize_distributed(args.coordinator_address, args.num_processes,
                                      args.process_id, args.distributed_timeout)
    if args.command == "run":
      preemption.install()
    return _study_command(args)
  except preemption.Preempted as e:
    print(f"preempted ({e.where}): run the same command again to resume", file=sys.stderr)
    return preemption.EXIT_CODE
  except config_lib.ConfigError as e:  # a config error is the user's to fix: no traceback
    print(f"config error: {e}", file=sys.stderr)
    return 2
  except mesh_lib.DistributedError as e:
    print(f"distributed error: {e}", file=sys.stderr)
    return 3


def _check_executor_flags(parser: argparse.ArgumentParser, args) -> None:
  if args.address is not None and args.executor != "ray":
    parser.error("--address names a Ray cluster: it goes with --executor ray")
  if args.executor == "ray" and args.coordinator_address is not None:
    parser.error("--coordinator_address is the local executor's multi-host run; with "
                 "--executor ray each stage runs in one Ray worker")


def _study_command(args) -> int:
  from scaling import config as config_lib
  cfg = config_lib.load(args.config)
  if args.command == "run" and args.executor == "ray":
    try:
      from scaling import executor_ray  # imports ray: only when asked for
    except ModuleNotFoundError as e:
      if e.name != "ray":
        raise
      raise config_lib.ConfigError("--executor ray needs Ray: pip install -e '.[ray]'") from e
    summary = executor_ray.run(cfg, args.workdir, args.address)
    return 1 if summary.failed else 0
  if args.command == "run":
    from scaling import runner
    summary = runner.run(cfg, args.workdir)
    return 1 if summary.failed else 0
  if args.command == "status":
    from scaling import runner
    runner.status(cfg, args.workdir)
    return 0
  if args.command == "fit":
    from scaling import report, results
    report.write(cfg, args.workdir, results.load(args.workdir))
    return 0
  return 2


def _bench(what: str) -> int:
  if what == "models":
    from scaling import bench_models
    bench_models.main([])
    return 0
  if what == "fits":
    from fits import bench
    bench.main([])
    return 0
  if what == "memory":
    from scaling import bench_memory
    return bench_memory.main([])
  if what == "cache":
    from scaling import bench_cache
    return bench_cache.main([])
  if what == "finetunes":
    from scaling import bench_finetunes
    return bench_finetunes.main([])
  print(f"unknown benchmark {what!r} (known: models, fits, memory, cache, finetunes)",
        file=sys.stderr)
  return 2


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m scaling", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for name in ("run", "status", "fit"):
    p = sub.add_parser(name)
    p.add_argument("--config", required=True,
                   help="a configs/*.py file with get_config(), or FILE.py:VARIANT")
    p.add_argument("--workdir", required=True, help="folder (or gs:// path) for all outputs")
  run = sub.choices["run"]
  multihost = run.add_argument_group(
      "multi-host", "every host runs the same command; on SLURM, MPI and multi-host TPU VMs "
      "JAX finds its peers itself, elsewhere give all three")
  multihost.add_argument("--coordinator_address", help="HOST:PORT of process 0")
  multihost.add_argument("--num_processes", type=int)
  multihost.add_argument("--process_id", type=int)
  multihost.add_argument("--distributed_timeout", type=int, default=300, metavar="SECONDS",
                         help="how long to wait for the other processes (default 300)")
  executor = run.add_argument_group("executor")
  executor.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: this process runs the stages in turn (default); "
                        "ray: each stage is a task on a Ray cluster (pip install '.[ray]')")
  executor.add_argument("--address", help="--executor ray: the cluster to join, 'auto' "
                        "(the one started on this machine) or HOST:PORT of its head; "
                        "default: start a local cluster")
  table = sub.add_parser("table")
  table.add_argument("--workdir", required=True)
  bench = sub.add_parser("bench")
  bench.add_argument("what", choices=["models", "fits", "memory", "cache", "finetunes"])
  return parser


if __name__ == "__main__":
  sys.exit(main())
