"""Bad input gives a ValueError that names the problem; property-based (hypothesis)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fits
from fits import laws

X = np.logspace(6, 9, 6)
Y = 1.5 + 300 * X ** -0.3
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(i=st.integers(0, 5), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       where=st.sampled_from(["x", "y"]))
def test_non_finite_values_are_named(i, bad, where):
    x, y = X.copy(), Y.copy()
    (x if where == "x" else y)[i] = bad
    with pytest.raises(ValueError, match=rf"{where}.*non-finite.*index {i}"):
        fits.fit("power_law", x, y)


@FAST
@given(i=st.integers(0, 5), value=st.floats(-1e6, 0.0), where=st.sampled_from(["x", "y"]))
def test_non_positive_values_under_a_log_are_named(i, value, where):
    x, y = X.copy(), Y.copy()
    (x if where == "x" else y)[i] = value
    with pytest.raises(ValueError, match=rf"{where}.*must be > 0"):
        fits.fit("power_law", x, y)


@FAST
@given(n=st.integers(0, 2))
def test_fewer_points_than_parameters(n):
    with pytest.raises(ValueError, match="fewer points than parameters"):
        fits.fit("power_law", X[:n], Y[:n])


@FAST
@given(n=st.integers(1, 5))
def test_mismatched_lengths(n):
    with pytest.raises(ValueError, match="mismatched lengths"):
        fits.fit("power_law", X, Y[:n])
    with pytest.raises(ValueError, match="mismatched lengths"):
        fits.fit("chinchilla", {"N": X, "D": X[:n]}, Y)


@FAST
@given(name=st.text(min_size=1, max_size=12).filter(lambda s: s not in laws.names()))
def test_unknown_law(name):
    with pytest.raises(ValueError, match="unknown law"):
        fits.fit(name, X, Y)


def test_unknown_column_and_options():
    with pytest.raises(ValueError, match=r"lacks inputs \['D'\]"):
        fits.fit("chinchilla", {"N": X, "T": X}, Y)
    with pytest.raises(ValueError, match="holdout"):
        fits.fit("power_law", X, Y, holdout="middle:2")
    with pytest.raises(ValueError, match="loss"):
        fits.fit("power_law", X, Y, loss="l1")
    with pytest.raises(ValueError, match="delta"):
        fits.fit("power_law", X, Y, delta=-1.0)
    with pytest.raises(ValueError, match="fixed names unknown"):
        fits.fit("power_law", X, Y, fixed={"Q": 1.0})


@settings(max_examples=15, deadline=None)
@given(y=st.lists(st.floats(0.01, 100.0), min_size=5, max_size=5),
       law=st.sampled_from(["log_law", "m4"]))
def test_arbitrary_positive_data_never_raises_from_the_optimiser(y, law):
    res = fits.fit(law, X[:5], np.array(y), starts=4, max_iter=32)
    assert res.status in ("ok", "failed")
    assert isinstance(res.diagnostics, list)
