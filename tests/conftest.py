"""Test configuration: strict JAX rank promotion, as equinox's test suite sets it.

Strict *dtype* promotion is not set: optax's Adam bias correction mixes its int32 step count
with Python floats, which strict promotion rejects (optax 0.2.8).
"""

import jax
import matplotlib
import pytest

matplotlib.use("Agg")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
