import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffomics import ConfigError
from diffomics.core import fit


class Point(nnx.Module):
    def __init__(self, start, fixed=0.0):
        self.xy = nnx.Param(jnp.asarray(start, jnp.float32))
        self.other = nnx.Param(jnp.asarray(fixed, jnp.float32))


def rosenbrock(m):
    x, y = m.xy[...][0], m.xy[...][1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def test_reaches_parabola_minimum():
    m = Point([3.0, -2.0])
    result = fit(
        m,
        lambda m, c: jnp.sum((m.xy[...] - c) ** 2),
        (jnp.array([0.5, 1.5]),),
        learning_rate=0.1,
        max_steps=2000,
        tol=1e-7,
    )
    np.testing.assert_allclose(m.xy[...], [0.5, 1.5], atol=1e-3)
    assert result.history[-1] < 1e-5
    assert result.n_steps == len(result.history) <= 2000


def test_reaches_rosenbrock_minimum():
    m = Point([-1.0, 1.0])
    fit(m, rosenbrock, learning_rate=0.02, max_steps=20000, tol=0.0, patience=1000)
    np.testing.assert_allclose(m.xy[...], [1.0, 1.0], atol=2e-2)


def test_early_stopping_flags_convergence():
    m = Point([1.0, 1.0])
    result = fit(m, lambda m: jnp.sum(m.xy[...] ** 2), learning_rate=0.05, max_steps=50000)
    assert result.converged
    assert result.n_steps < 50000


def test_wrt_filter_holds_other_parameters_fixed():
    m = Point([1.0, 1.0], fixed=3.0)
    fit(
        m,
        lambda m: jnp.sum(m.xy[...] ** 2) + m.other[...] ** 2,
        max_steps=200,
        wrt=nnx.PathContains("xy"),
    )
    assert float(m.other[...]) == 3.0
    assert float(jnp.abs(m.xy[...]).max()) < 0.5


def test_same_inputs_same_numbers():
    a, b = Point([2.0, -1.0]), Point([2.0, -1.0])
    ra = fit(a, rosenbrock, max_steps=300)
    rb = fit(b, rosenbrock, max_steps=300)
    np.testing.assert_array_equal(ra.history, rb.history)
    np.testing.assert_array_equal(a.xy[...], b.xy[...])


def test_non_finite_loss_raises():
    m = Point([1.0, 1.0])
    with pytest.raises(ConfigError, match="non-finite"):
        fit(m, lambda m: jnp.log(-jnp.sum(m.xy[...] ** 2)), max_steps=100)


@pytest.mark.parametrize(
    "kwargs", [{"learning_rate": 0.0}, {"max_steps": 0}, {"steps_per_check": 0}]
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ConfigError):
        fit(Point([1.0, 1.0]), rosenbrock, **kwargs)


def test_killed_fit_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path):
    path = tmp_path / "fit.npz"
    through = Point([2.0, -1.0])
    ra = fit(through, rosenbrock, max_steps=400, tol=0.0, patience=100)
    first = Point([2.0, -1.0])  # a run that stops (as if killed) after 150 of its steps
    fit(first, rosenbrock, max_steps=150, tol=0.0, patience=100, checkpoint=path)
    assert path.is_file() and not list(tmp_path.glob(".*"))
    resumed = Point([2.0, -1.0])  # a new process: fresh parameters, the same checkpoint
    rb = fit(resumed, rosenbrock, max_steps=400, tol=0.0, patience=100, checkpoint=path)
    np.testing.assert_array_equal(rb.history, ra.history)
    np.testing.assert_array_equal(resumed.xy[...], through.xy[...])
    with pytest.raises(ConfigError, match="different model"):
        fit(Point([1.0, 2.0, 3.0]), rosenbrock, checkpoint=path)


def test_fits_of_one_model_and_loss_share_one_compiled_program():
    from diffomics.core._fit import _run_chunk

    def loss(m, c):
        return jnp.sum((m.xy[...] - c) ** 2)

    fit(Point([1.0, 1.0]), loss, (jnp.zeros(2),), max_steps=100)
    compiled = _run_chunk._cache_size()
    # new parameters, new data, another fit: the same shapes reuse the program
    fit(Point([5.0, -3.0]), loss, (jnp.ones(2),), max_steps=100)
    assert _run_chunk._cache_size() == compiled
    fit(Point([1.0, 1.0, 1.0]), loss, (jnp.zeros(3),), max_steps=100)  # another shape
    assert _run_chunk._cache_size() == compiled + 1
