"""Parameter recovery for every law from generated points, plus the helpers the laws imply."""
import numpy as np
import pytest

import fits
from fits import laws

RNG = np.random.default_rng(0)


def _noisy(y, scale=0.002, seed=0):
    return y * np.exp(np.random.default_rng(seed).normal(0.0, scale, len(y)))


def _assert_close(params, truth, rtol):
    for name, value in truth.items():
        assert params[name] == pytest.approx(value, rel=rtol), name


def test_registry_names_latex_and_unknown_law():
    for name in ["power_law", "m4", "log_law", "chinchilla", "ghorbani", "gadre_overtrain", "exp_link",
                 "sigmoid_link", "fernandes_fraction", "data_constrained"]:
        law = laws.get(name)
        assert law.name == name and law.latex.startswith("$") and law.n_inputs >= 1
    with pytest.raises(ValueError, match="unknown law 'nope'"):
        laws.get("nope")


def test_predict_accepts_dict_and_array_params():
    law = laws.get("power_law")
    x = np.array([1.0, 10.0])
    by_dict = law.predict({"E": 1.0, "A": 2.0, "alpha": 1.0}, x)
    np.testing.assert_allclose(by_dict, [3.0, 1.2])
    np.testing.assert_allclose(law.predict([1.0, 2.0, 1.0], x), by_dict)


def test_power_law_recovery():
    x = np.logspace(6, 10, 10)
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.3}
    y = laws.get("power_law").predict(truth, x)
    res = fits.fit("power_law", x, y, starts=12)
    assert res.ok
    _assert_close(res.params, truth, 1e-5)


@pytest.mark.parametrize("alpha", [0.02, 0.7, 1.0, 4.0])
def test_m4_prediction_solves_its_implicit_equation(alpha):
    law = laws.get("m4")
    p = {"L_inf": 0.3, "L_0": 1.5, "alpha": alpha, "beta": 20.0, "c": -0.4}
    x = np.logspace(4, 11, 8)
    L = law.predict(p, x)
    assert np.all((L > p["L_inf"]) & (L < p["L_0"])) and np.all(np.diff(L) < 0)
    lhs = (L - p["L_inf"]) / (p["L_0"] - L) ** alpha
    np.testing.assert_allclose(lhs, p["beta"] * x ** p["c"], rtol=1e-10)


def test_m4_jax_derivatives_match_finite_differences():
    import jax
    import jax.numpy as jnp

    law = laws.get("m4")
    x = np.logspace(4, 10, 5)
    theta = np.array([0.3, 1.5, 0.7, 20.0, -0.4])
    with jax.enable_x64(True):
        jac = np.asarray(jax.jacfwd(lambda t: law.model(tuple(t), (jnp.asarray(x),), jnp))(
            jnp.asarray(theta)))
    for j in range(5):
        h = 1e-6 * max(abs(theta[j]), 1.0)
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        fd = (law.model(tuple(up), (x,), np) - law.model(tuple(down), (x,), np)) / (2 * h)
        np.testing.assert_allclose(jac[:, j], fd, rtol=1e-5, atol=1e-9)


def test_m4_recovery():
    truth = {"L_inf": 0.35, "L_0": 1.2, "alpha": 0.8, "beta": 40.0, "c": -0.45}
    x = np.logspace(5, 9, 12)
    y = _noisy(laws.get("m4").predict(truth, x), scale=0.001)
    res = fits.fit("m4", x, y)
    assert res.ok and res.train_error < 0.003
    np.testing.assert_allclose(res.predict(np.array([1e10])), laws.get("m4").predict(truth, [1e10]),
                               rtol=0.02)


def test_log_law_recovery():
    x = np.logspace(7, 10, 8)
    truth = {"A": 5.0, "alpha": 0.3, "beta": 1.2}
    y = laws.get("log_law").predict(truth, x)
    res = fits.fit("log_law", x, y, starts=16)
    _assert_close(res.params, truth, 1e-4)


def test_chinchilla_recovery_and_compute_optimal():
    N = np.repeat(np.logspace(7, 9.5, 6), 5)
    D = N * np.tile(np.logspace(0.5, 2.5, 5), 6)
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    y = laws.get("chinchilla").predict(truth, {"N": N, "D": D})
    res = fits.fit("chinchilla", {"N": N, "D": D}, y, starts=16)
    _assert_close(res.params, truth, 1e-3)
    n_opt, d_opt = laws.chinchilla_compute_optimal(truth, 1e21)
    assert 6 * n_opt * d_opt == pytest.approx(1e21, rel=1e-9)
    # at fixed compute the optimum beats a 2x smaller and a 2x larger model
    loss = lambda n: laws.get("chinchilla").predict(truth, {"N": [n], "D": [1e21 / 6 / n]})[0]
    assert loss(n_opt) < min(loss(n_opt / 2), loss(n_opt * 2))


def test_ghorbani_recovery_and_split():
    Ne, Nd = np.meshgrid(np.logspace(7, 9, 4), np.logspace(7, 9, 4))
    x = {"N_e": Ne.ravel(), "N_d": Nd.ravel()}
    truth = {"beta": 50.0, "p_e": 0.2, "p_d": 0.3, "L_inf": 1.2}
    y = laws.get("ghorbani").predict(truth, x)
    res = fits.fit("ghorbani", x, y, starts=16)
    _assert_close(res.params, truth, 1e-3)
    assert laws.ghorbani_optimal_split(res.params) == pytest.approx(0.4, rel=1e-3)


def test_gadre_and_links_recovery():
    N = np.array([1e7, 1e7, 8e7, 1.5e8, 4e8, 4e8])
    M = np.array([20, 320, 20, 20, 20, 80.0])
    truth = {"a": 166.0, "b": -0.27, "c": 367.0, "E": 1.84}
    y = laws.get("gadre_overtrain").predict(truth, {"N": N, "M": M})
    res = fits.fit("gadre_overtrain", {"N": N, "M": M}, y)
    _assert_close(res.params, truth, 1e-3)
    L = np.linspace(2.5, 6.0, 8)
    link = {"eps": 0.85, "k": 2.2, "gamma": 0.7}
    res = fits.fit("exp_link", L, laws.get("exp_link").predict(link, L))
    _assert_close(res.params, link, 1e-4)
    sig = {"a": -0.5, "k": 3.0, "L0": 3.5, "b": 0.8}
    res = fits.fit("sigmoid_link", L, laws.get("sigmoid_link").predict(sig, L))
    _assert_close(res.params, sig, 1e-3)


def test_chained_two_step_prediction():
    N = np.array([1e7, 1e7, 8e7, 1.5e8, 4e8])
    M = np.array([20, 320, 20, 20, 20.0])
    x = {"N": N, "M": M}
    truth = {"a": 166.0, "b": -0.27, "c": 367.0, "E": 1.84}
    L = laws.get("gadre_overtrain").predict(truth, x)
    err = 0.85 - 2.2 * np.exp(-0.7 * L)
    loss_fit = fits.fit("gadre_overtrain", x, L)
    link_fit = fits.fit("exp_link", L, err)
    target = {"N": np.array([1.4e9]), "M": np.array([640.0])}
    expected = 0.85 - 2.2 * np.exp(-0.7 * laws.get("gadre_overtrain").predict(truth, target))
    np.testing.assert_allclose(fits.chain(loss_fit, link_fit).predict(target), expected,
                               rtol=1e-4)


def test_fernandes_joint_fraction_and_its_fit():
    N = np.tile(np.logspace(7, 9, 5), 3)
    p = np.repeat([0.3, 0.7, 1.0], 5)
    betas = {0.3: 300.0, 0.7: 180.0, 1.0: 150.0}
    y = np.array([betas[w] * n ** -0.3 + 1.5 for n, w in zip(N, p)])
    res = fits.fit("fernandes_joint", {"N": N, "p": p}, y, starts=16)
    assert res.params["alpha"] == pytest.approx(0.3, rel=1e-3)
    frac = laws.fernandes_effective_fraction(res.params)
    assert frac[1.0] == pytest.approx(1.0)
    assert frac[0.3] == pytest.approx((150.0 / 300.0) ** (1 / 0.3), rel=1e-3)
    w = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    c = {"c1": 0.4, "c2": 1.5, "c3": 0.8}
    res = fits.fit("fernandes_fraction", w, laws.get("fernandes_fraction").predict(c, w))
    _assert_close(res.params, c, 1e-3)


def test_data_constrained_recovers_repetition_constants():
    N = np.repeat([1e8, 5e8, 2e9], 6)
    U = np.full(18, 2e9)
    D = U * np.tile([0.5, 1, 2, 4, 16, 40.0], 3)
    truth = dict(laws.MUENNIGHOFF_BASE, R_D_star=15.0, R_N_star=5.0)
    x = {"N": N, "D": D, "U": np.minimum(U, D)}
    y = laws.get("data_constrained").predict(truth, x)
    res = fits.fit("data_constrained", x, y, fixed=laws.MUENNIGHOFF_BASE)
    assert res.params["R_D_star"] == pytest.approx(15.0, rel=1e-3)
