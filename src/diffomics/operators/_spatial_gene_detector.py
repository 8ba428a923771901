"""`DifferentiableSpatialGeneDetector`: SpatialDE's Gaussian-process test as an NNX module."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from diffomics.core._checks import check_finite, check_matrix, check_positive, is_traced
from diffomics.core._errors import ConfigError, CountsError, ShapeError
from diffomics.core._numerics import safe_eigh, safe_sqrt
from diffomics.core._operator import Operator, OperatorConfig
from diffomics.operators._keys import SPATIAL_GENE_KEYS as K
from diffomics.spatial._gp_test import fit_gp_implicit, mixture_log_pvalue, standardize
from diffomics.spatial._kernels import gower_factor, kernel_matrix
from diffomics.spatial._preprocess import regress_out, stabilize

__all__ = ["DifferentiableSpatialGeneDetector", "SpatialGeneDetectorConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpatialGeneDetectorConfig(OperatorConfig):
    """Configuration of `DifferentiableSpatialGeneDetector`.

    Attributes:
      n_genes: number of genes (columns of ``expression``), checked against the data.
      lengthscale: initial squared-exponential lengthscale, in coordinate units, > 0.
      variance: initial shared spatial variance ``sigma_s^2`` of standardised genes, > 0;
        with `noise_variance` it sets the smoothing of ``smoothed_expression``.
      noise_variance: initial shared noise variance ``sigma_e^2``, > 0.
      hidden_dims: widths of the smoothing network on coordinates (empty: no network);
        its last layer starts at zero, so the untrained operator's outputs are the GP's.
      temperature: softness of ``is_spatial`` on the log p-value scale, > 0.
      pvalue_threshold: p-value at which ``is_spatial`` is 0.5, in (0, 1).
      learnable_kernel: whether the lengthscale and variances are `nnx.Param`s (trained
        by gradient); otherwise they are fixed `nnx.Variable`s.
    """

    n_genes: int = 2000
    lengthscale: float = 1.0
    variance: float = 1.0
    noise_variance: float = 0.1
    hidden_dims: list[int] = dataclasses.field(default_factory=lambda: [64, 32])
    temperature: float = 1.0
    pvalue_threshold: float = 0.05
    learnable_kernel: bool = True

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field."""
        if not isinstance(self.n_genes, int) or isinstance(self.n_genes, bool) or self.n_genes < 1:
            msg = f"SpatialGeneDetectorConfig.n_genes must be an int >= 1; found {self.n_genes!r}."
            raise ConfigError(msg)
        for name in ("lengthscale", "variance", "noise_variance", "temperature"):
            check_positive(getattr(self, name), f"SpatialGeneDetectorConfig.{name}")
        if not 0.0 < self.pvalue_threshold < 1.0:
            msg = (
                "SpatialGeneDetectorConfig.pvalue_threshold must be in (0, 1); "
                f"found {self.pvalue_threshold!r}."
            )
            raise ConfigError(msg)
        if any(not isinstance(h, int) or h < 1 for h in self.hidden_dims):
            msg = (
                "SpatialGeneDetectorConfig.hidden_dims must hold ints >= 1; "
                f"found {self.hidden_dims!r}."
            )
            raise ConfigError(msg)


class DifferentiableSpatialGeneDetector(Operator):
    """Spatially variable genes by SpatialDE's GP likelihood-ratio test, differentiable.

    For each gene, ``y = mu + f(x) + e`` with ``f ~ GP(0, sigma_s^2 K_SE(l))`` and
    ``e ~ N(0, sigma_e^2)``; the per-gene variances are maximum-likelihood estimates at the
    operator's lengthscale ``l`` (`diffomics.spatial.fit_gp_implicit`), ``fsv`` is the
    Gower-normalised fraction of spatial variance, and ``spatial_pvalues`` come from the
    likelihood-ratio statistic ``2 * LLR`` under its boundary null
    ``0.5 chi2_0 + 0.5 chi2_1`` (one kernel, so no search over lengthscales inflates it).
    With ``total_counts`` the expression is treated as raw counts: variance-stabilised and
    the log total counts regressed out, as SpatialDE's pipeline does.

    ``smoothed_expression`` is the GP posterior mean under the shared kernel
    ``sigma_s^2 K + sigma_e^2 I`` of standardised genes, back in the units of the tested
    values (the input's units; with ``total_counts``, the stabilised values with the log
    total counts regressed out), plus the smoothing network's output. Train the shared
    kernel with `loss` (the negative marginal log-likelihood per gene); every output is
    differentiable in the lengthscale, the variances and the inputs (the eigendecomposition
    uses `diffomics.core.safe_eigh`).

    Inputs (``data`` keys):
      ``spatial_coords``: `(n_spots, 2)`, finite, at least 3 spots.
      ``expression``: `(n_spots, n_genes)`, finite (raw counts when ``total_counts`` given).
      ``total_counts`` (optional): `(n_spots,)`, > 0.

    Outputs (added keys):
      ``fsv``, ``spatial_pvalues``, ``is_spatial``: `(n_genes,)`.
      ``smoothed_expression``: `(n_spots, n_genes)`.

    Args:
      config: the `SpatialGeneDetectorConfig`.
      rngs: keyword-only Flax random streams for the smoothing network.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> xy = rng.uniform(0, 10, size=(80, 2)).astype("float32")
      >>> y = np.stack([np.sin(xy[:, 0]), rng.normal(size=80)], 1).astype("float32")
      >>> det = DifferentiableSpatialGeneDetector(
      ...     SpatialGeneDetectorConfig(n_genes=2, lengthscale=2.0), rngs=nnx.Rngs(0))
      >>> out, _, _ = det.apply({"spatial_coords": xy, "expression": y}, {}, None)
      >>> bool(out["spatial_pvalues"][0] < 1e-6), bool(out["spatial_pvalues"][1] > 0.01)
      (True, True)
    """

    input_keys = (K.SPATIAL_COORDS, K.EXPRESSION)
    optional_keys = (K.TOTAL_COUNTS,)

    def __init__(self, config: SpatialGeneDetectorConfig, *, rngs: nnx.Rngs) -> None:
        self.config = c = config
        kind = nnx.Param if c.learnable_kernel else nnx.Variable
        self.log_lengthscale = kind(jnp.log(jnp.float32(c.lengthscale)))
        self.log_variance = kind(jnp.log(jnp.float32(c.variance)))
        self.log_noise_variance = kind(jnp.log(jnp.float32(c.noise_variance)))
        layers = []
        if c.hidden_dims:
            widths = [2, *c.hidden_dims]
            for a, b in zip(widths[:-1], widths[1:], strict=True):
                layers += [nnx.Linear(a, b, rngs=rngs), nnx.relu]
            layers.append(
                nnx.Linear(
                    widths[-1],
                    c.n_genes,
                    kernel_init=nnx.initializers.zeros,
                    bias_init=nnx.initializers.zeros,
                    rngs=rngs,
                )
            )
        self.smoother = nnx.Sequential(*layers) if layers else None

    def _inputs(self, data: Mapping[str, Any]) -> tuple[Array, Array]:
        coords = jnp.asarray(data[K.SPATIAL_COORDS])
        y = jnp.asarray(data[K.EXPRESSION])
        check_matrix(coords, K.SPATIAL_COORDS, shape=(None, 2))
        check_matrix(y, K.EXPRESSION, shape=(coords.shape[0], self.config.n_genes))
        if coords.shape[0] < 3:
            msg = f"{K.SPATIAL_COORDS} needs at least 3 spots; found {coords.shape[0]}."
            raise ShapeError(msg)
        check_finite(coords, K.SPATIAL_COORDS)
        check_finite(y, K.EXPRESSION)
        if data.get(K.TOTAL_COUNTS) is not None:
            totals = jnp.asarray(data[K.TOTAL_COUNTS])
            check_matrix(totals, K.TOTAL_COUNTS, ndim=1, shape=(coords.shape[0],))
            check_finite(totals, K.TOTAL_COUNTS)
            if not is_traced(totals) and bool(jnp.any(totals <= 0)):
                msg = f"{K.TOTAL_COUNTS} must be > 0 for every spot (its log is regressed out)."
                raise CountsError(msg)
            y = regress_out(stabilize(y)[0], jnp.log(totals))
        return coords, y

    def kernel(self, coords: Array) -> Array:
        """The squared-exponential kernel matrix at the current lengthscale, `(n, n)`."""
        return kernel_matrix(coords, kernel="se", lengthscale=jnp.exp(self.log_lengthscale[...]))

    def _spectrum(self, coords: Array) -> tuple[Array, Array, Array]:
        k = self.kernel(coords)
        s, u = safe_eigh(k)
        return jnp.maximum(s, 1e-8), u, gower_factor(k)

    def outputs(self, data: Mapping[str, Any]) -> dict[str, Array]:
        """FSV, p-values, soft spatial indicator and smoothed expression for `data`."""
        coords, y = self._inputs(data)
        z, constant = standardize(y)
        s, u, gower = self._spectrum(coords)
        fit = fit_gp_implicit(z, s, u, gower, constant=constant)
        log_p = mixture_log_pvalue(2.0 * fit.llr)
        c = self.config
        score = (jnp.log(c.pvalue_threshold) - log_p) / c.temperature
        signal = jnp.exp(self.log_variance[...]) * s
        shrink = signal / (signal + jnp.exp(self.log_noise_variance[...]))
        smooth_z = u @ (shrink[:, None] * (u.T @ z))
        mean = jnp.mean(y, axis=0, keepdims=True)
        # sd = s std(y / s) with s the gene's largest |value|: y**2 overflows float32 for
        # values of 1e20 and more; the product does not depend on s, so its gradient is stopped
        s_y = jax.lax.stop_gradient(jnp.max(jnp.abs(y), axis=0, keepdims=True))
        s_y = jnp.where(s_y > 0, s_y, 1.0)
        sd = s_y * safe_sqrt(jnp.var(y / s_y, axis=0, keepdims=True))
        smoothed = mean + sd * smooth_z
        if self.smoother is not None:
            centred = coords - jnp.mean(coords, axis=0, keepdims=True)
            scaled = centred / (jnp.std(coords, axis=0, keepdims=True) + 1e-12)
            smoothed = smoothed + self.smoother(scaled)
        return {
            K.FSV: fit.fsv,
            K.SPATIAL_PVALUES: jnp.exp(log_p),
            K.IS_SPATIAL: jax.nn.sigmoid(score),
            K.SMOOTHED_EXPRESSION: smoothed,
        }

    def loss(self, data: Mapping[str, Any]) -> Array:
        """Negative marginal log-likelihood per gene of the standardised genes (nats).

        Under the shared kernel ``sigma_s^2 K + sigma_e^2 I``; minimising it trains the
        lengthscale and the two variances (when ``learnable_kernel``).
        """
        coords, y = self._inputs(data)
        z, _ = standardize(y)
        s, u, _ = self._spectrum(coords)
        cov = jnp.exp(self.log_variance[...]) * s + jnp.exp(self.log_noise_variance[...])
        proj = u.T @ z
        quad = jnp.sum(proj**2 / cov[:, None], axis=0)
        n = z.shape[0]
        return 0.5 * jnp.mean(quad + jnp.sum(jnp.log(cov)) + n * jnp.log(2.0 * jnp.pi))
