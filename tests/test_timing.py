"""The run's time breakdown: each second counted once, in the innermost phase, and
JAX's compilations moved out of the phase they happened in."""
import jax
import jax.numpy as jnp
import pytest

from scaling import timing


@pytest.fixture
def clock(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
  return now


def test_nested_phases_count_each_second_once(clock):
  breakdown = timing.Breakdown()
  with breakdown.phase("train steps"):
    clock[0] += 3
    with breakdown.phase("input"):
      clock[0] += 2
    with breakdown.phase("checkpoints"):
      clock[0] += 1
      breakdown.compiled(0.25)
  assert breakdown.seconds == {"train steps": 3, "input": 2, "checkpoints": 0.75, "compile": 0.25}
  assert breakdown.total_s() == 6
  assert breakdown.line().startswith("time: train steps 3 s (50%), input 2 s (33%)")


def test_jax_compilations_land_in_compile_not_in_the_phase():
  with timing.measure() as breakdown:
    with timing.phase("train steps"):
      jax.jit(lambda x: jnp.sin(x) @ x.T + 7.0)(jnp.ones((64, 64))).block_until_ready()
  assert breakdown.seconds["compile"] > 0
  assert breakdown.total_s() == pytest.approx(sum(breakdown.seconds.values()))


def test_phases_outside_a_measurement_cost_nothing():
  with timing.phase("input"):
    pass
  assert list(timing.timed_iterator(iter([1, 2, 3]))) == [1, 2, 3]
