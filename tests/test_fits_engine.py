"""The batched LM engine's parts: the Cholesky solve, the written-out log-sum-exp, point padding and
lane merging, each against a plain reference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fits import engine, laws
from fits import core


@pytest.mark.parametrize("n", [1, 2, 5, 9, 12, 14])
def test_spd_solve_matches_numpy(n):
    import jax

    rng = np.random.default_rng(n)
    m = rng.normal(size=(n, n))
    a = m @ m.T + n * np.eye(n)
    b = rng.normal(size=n)
    with jax.enable_x64(True):
        x = np.asarray(engine._spd_solve(a, b))
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)


@given(terms=st.lists(st.floats(-800.0, 800.0), min_size=2, max_size=3))
@settings(max_examples=50, deadline=None)
def test_log_sum_exp_is_stable_and_exact(terms):
    got = laws._log_sum_exp(np, *[np.array([t]) for t in terms])[0]
    want = np.logaddexp.reduce(np.array(terms))
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_log_sum_exp_of_vanishing_terms_and_its_gradient():
    import jax
    import jax.numpy as jnp

    with np.errstate(divide="ignore"):  # log(0) of all-vanishing terms is -inf, as it should be
        assert laws._log_sum_exp(np, np.array([-np.inf]), np.array([-np.inf]))[0] == -np.inf
    assert laws._log_sum_exp(np, np.array([-np.inf]), np.array([0.0]))[0] == 0.0
    z = jnp.array([0.3, -1.2, 2.0])
    grad = jax.grad(lambda v: laws._log_sum_exp(jnp, v[0], v[1], v[2]))(z)
    np.testing.assert_allclose(grad, jax.nn.softmax(z), rtol=1e-6)


def _sequential_greedy(close):
    reps, target = [], {}
    for a in range(len(close)):
        hit = [b for b in reps if close[a, b]]
        if hit:
            target[a] = hit[0]
        else:
            reps.append(a)
    return reps, target


@given(n=st.integers(1, 30), density=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_greedy_representatives_match_the_sequential_walk(n, density, seed):
    rng = np.random.default_rng(seed)
    sym = rng.random((n, n)) < density
    close = np.tril(sym | sym.T, k=-1)
    pairs = engine._greedy_representatives(close)
    reps, _ = _sequential_greedy(close)
    merged = {a for a, _ in pairs}
    assert sorted(set(range(n)) - merged) == reps
    for a, b in pairs:  # each merged lane joins a better representative close to it
        assert b < a and close[a, b] and b in reps


def _chinchilla_problem(seed, n):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e11), n))
    D = N * np.exp(rng.uniform(0.0, np.log(300.0), n))
    y = (1.8 + 500.0 * N ** -0.35 + 400.0 * D ** -0.3) * np.exp(rng.normal(0.0, 0.02, n))
    law = laws.get("chinchilla")
    return law, engine.Problem(law=law, xs=(N, D), target=np.log(y), base_raw=np.zeros(5),
                               free_idx=tuple(range(5)))


def test_merging_lanes_keeps_the_best_optimum():
    law, problem = _chinchilla_problem(seed=3, n=90)
    starts = law.to_raw(law.start_grid())[::9]  # 500 of the 4,500 grid starts
    merged = engine.minimize_lm(problem, starts, merge=True)
    alone = engine.minimize_lm(problem, starts, merge=False)
    best_merged = merged.objective[merged.converged].min()
    best_alone = alone.objective[alone.converged].min()
    assert best_merged == pytest.approx(best_alone, rel=1e-6)


@pytest.mark.parametrize("n", [6, 11, 33])
def test_padding_points_leaves_the_objective_unchanged(n):
    law, problem = _chinchilla_problem(seed=n, n=n)
    out = engine.minimize_lm(problem, law.to_raw(law.start_grid())[::90])
    best = np.argmin(out.objective)
    assert out.objective[best] == pytest.approx(engine.objective_np(problem, out.theta[best]),
                                                rel=1e-10)
    r, J = engine.jacobian(problem, out.theta[best])
    assert r.shape == (n,) and J.shape == (n, 5)


def test_fits_of_different_sizes_share_compiled_kernels():
    x = np.logspace(5, 7, 7)
    y = np.log(3e-3 * x ** 0.8) ** 1.1
    core.fit("log_law", x[:5], y[:5])
    before = _compiled_shapes()
    core.fit("log_law", x[:7], y[:7])
    assert _compiled_shapes() == before


def _compiled_shapes():
    from fits import compilation

    return sorted(str(key) for key in compilation._loaded if "log_law" in str(key[1]))
