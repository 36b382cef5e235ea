"""Fault injection: a study killed with SIGKILL at random moments, then run again, ends
with the same rows as a study never interrupted.

    python -m scaling.faults --config configs/isik2024.py:micro --workdir /tmp/faults
        [--trials 10] [--seed 0]

First the study runs uninterrupted in <workdir>/reference. Then each trial starts it
afresh in <workdir>/trial_<i>, kills it (SIGKILL: no handler runs, no file is closed)
at a moment drawn uniformly from the reference run's span (less its compiling: all runs
share one XLA cache), runs the same command again to completion, and compares the results
rows with the reference's: every column but wall-clock time must be equal (floats bit for
bit), and fits.csv byte for byte. A kill that would land after the run ended is drawn
again from the shorter span. Each trial says where the kill landed and how the re-run
resumed. Exit status 0 when every trial matches.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from etils import epath

from scaling import results

# Columns that measure the machine, not the study.
TIMING_COLUMNS = ("wall_s",)


@dataclasses.dataclass
class Trial:
  index: int
  killed_at_s: float | None     # None: the run ended before the kill was due
  killed_during: str            # the last stage line the killed run printed
  rerun: str                    # the re-run's summary line ('done: ...')
  resumed: list[str]            # the re-run's 'resuming from ...' lines
  differences: list[str]        # empty when the rows and fits match the reference

  @property
  def identical(self) -> bool:
    return not self.differences

  def describe(self) -> str:
    when = ("not killed (the run ended first)" if self.killed_at_s is None
            else f"killed at {self.killed_at_s:.1f} s during {self.killed_during!r}")
    resumed = f"; {len(self.resumed)} resumed mid-run" if self.resumed else ""
    verdict = "identical" if self.identical else "DIFFERS: " + "; ".join(self.differences)
    return f"trial {self.index}: {when}; re-run {self.rerun}{resumed}; {verdict}"


def run_command(config: str, workdir: epath.Path) -> list[str]:
  return [sys.executable, "-m", "scaling", "run", "--config", config, "--workdir", str(workdir)]


def _environment(cache: epath.Path) -> dict[str, str]:
  # one XLA cache for every run: kills should land in training, not in compiling
  return dict(os.environ, SCALING_COMPILATION_CACHE=str(cache), PYTHONUNBUFFERED="1")


def run_to_completion(config: str, workdir: epath.Path, env: dict) -> tuple[float, str]:
  """Runs the study; its wall time and output. Raises if it does not end with status 0."""
  start = time.perf_counter()
  done = subprocess.run(run_command(config, workdir), env=env, capture_output=True, text=True)
  if done.returncode != 0:
    raise RuntimeError(f"`{' '.join(run_command(config, workdir))}` exited with "
                       f"{done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
  return time.perf_counter() - start, done.stdout


def killed_run(config: str, workdir: epath.Path, env: dict, after_s: float) -> tuple[bool, str]:
  """Starts the study and SIGKILLs it after `after_s` seconds: (killed, last stage line)."""
  log = workdir.parent / f"{workdir.name}.killed.log"
  with open(log, "w") as out:
    process = subprocess.Popen(run_command(config, workdir), env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    try:
      process.wait(timeout=after_s)
      return False, ""
    except subprocess.TimeoutExpired:
      process.send_signal(signal.SIGKILL)
      process.wait()
  stage_lines = [line for line in log.read_text().splitlines() if line.startswith("[")]
  return True, stage_lines[-1] if stage_lines else "start-up"


def compare(reference: epath.Path, trial: epath.Path) -> list[str]:
  """What differs between two finished studies' rows (wall time aside) and fits."""
  want, got = (results.load(w).drop(columns=list(TIMING_COLUMNS), errors="ignore")
               for w in (reference, trial))
  differences = []
  if list(want["key"]) != list(got["key"]):
    missing = sorted(set(want["key"]) - set(got["key"]))
    return [f"rows differ: {len(got)} rows vs {len(want)}, missing {missing[:3]}"]
  for column in want.columns:
    if not _same(want[column], got[column]):
      differences.append(f"column {column!r} differs")
  if (reference / "fits.csv").read_bytes() != (trial / "fits.csv").read_bytes():
    differences.append("fits.csv differs")
  return differences


def _same(a: pd.Series, b: pd.Series) -> bool:
  if a.dtype.kind == "f" and b.dtype.kind == "f":
    return np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True)
  return a.astype(object).where(a.notna(), None).tolist() == b.astype(object).where(b.notna(), None).tolist()


def run_trials(config: str, workdir: epath.PathLike, trials: int, seed: int = 0,
               say=print) -> list[Trial]:
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  env = _environment(workdir / "xla_cache")
  reference = workdir / "reference"
  wall_s, output = run_to_completion(config, reference, env)
  # the trials read the compiled programs from the cache: their runs are that much shorter
  span_s = max(1.0, wall_s - _seconds(output, "compile"))
  say(f"reference run: {wall_s:.1f} s, of which {wall_s - span_s:.1f} s compiling")
  rng = random.Random(seed)
  found = []
  for index in range(1, trials + 1):
    folder = workdir / f"trial_{index}"
    killed, during, after_s = False, "", None
    for _ in range(5):  # a kill past the end of the run: draw again, from the shorter span
      after_s = rng.uniform(0.02, 0.98) * span_s
      killed, during = killed_run(config, folder, env, after_s)
      if killed:
        break
      span_s = after_s
      subprocess.run(["rm", "-rf", str(folder)], check=True)
    _, output = run_to_completion(config, folder, env)
    trial = Trial(index, after_s if killed else None, during,
                  _last(output, r"^done: (.*?); results"),
                  re.findall(r"resuming from the \w+(?: \w+)? checkpoint at step [\d,]+", output),
                  compare(reference, folder))
    say(trial.describe())
    found.append(trial)
  return found


def _seconds(output: str, phase: str) -> float:
  """A phase's seconds from a run's closing time line (scaling.timing), 0 if absent."""
  found = re.search(rf"^time: .*\b{phase} ([\d,.]+) s", output, flags=re.MULTILINE)
  return float(found.group(1).replace(",", "")) if found else 0.0


def _last(output: str, pattern: str) -> str:
  matches = re.findall(pattern, output, flags=re.MULTILINE)
  return matches[-1] if matches else "(no summary line)"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m scaling.faults", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/isik2024.py:micro")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--trials", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  trials = run_trials(args.config, args.workdir, args.trials, args.seed)
  same = sum(t.identical for t in trials)
  killed = sum(t.killed_at_s is not None for t in trials)
  print(f"{same} of {len(trials)} trials identical to the uninterrupted run "
        f"({killed} killed mid-run)")
  return 0 if same == len(trials) else 1


if __name__ == "__main__":
  sys.exit(main())
