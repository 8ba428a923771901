"""`SpatialDeconvolution`: cell-type proportions of spatial spots from reference profiles."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from diffomics.core._checks import check_choice, check_counts, check_matrix, check_positive
from diffomics.core._errors import ConfigError
from diffomics.core._likelihoods import LIKELIHOODS
from diffomics.core._numerics import default_float
from diffomics.core._operator import Operator, OperatorConfig, linear
from diffomics.operators._keys import DECONVOLUTION_KEYS as K
from diffomics.spatial._deconvolution import (
    deconvolution_mean,
    deconvolution_neg_log_posterior,
    log_relative_expression,
    platform_effect_neg_log_marginal,
    platform_effect_posterior_mean,
)

__all__ = ["BULK_PARAMS", "SPOT_PARAMS", "SpatialDeconvolution", "SpatialDeconvolutionConfig"]

MODES = ("amortized", "direct")

#: NNX filter of the parameters fitted on the pooled spots (`SpatialDeconvolution.bulk_loss`).
BULK_PARAMS = nnx.All(nnx.Param, nnx.PathContains("bulk_logits"))
#: NNX filter of the parameters fitted on the spots (`SpatialDeconvolution.loss`).
SPOT_PARAMS = nnx.All(
    nnx.Param, nnx.Not(nnx.Any(BULK_PARAMS, nnx.PathContains("log_platform_effect")))
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpatialDeconvolutionConfig(OperatorConfig):
    """Configuration of `SpatialDeconvolution`.

    Attributes:
      n_cell_types: number of reference cell types (rows of ``reference_profiles``), >= 1.
      n_genes: number of genes (columns of both inputs), >= 1.
      hidden_dim: width of the amortized encoder's hidden layer (spot expression -> logits).
      temperature: divides the logits before the softmax, > 0; below 1 sharpens proportions.
      likelihood: observation model: ``"nb"`` (raw counts), ``"poisson"`` (raw counts) or
        ``"gaussian"`` (normalised values that are not counts).
      mode: ``"amortized"`` (an encoder maps each spot's expression to its logits, so the
        fitted operator applies to new spots) or ``"direct"`` (one free logit vector per spot,
        a per-spot maximum a posteriori fit as cell2location and RCTD do; needs `n_spots`).
      n_spots: number of spots, required by ``mode="direct"`` and checked against the data.
      platform_effect_scale: prior standard deviation of the log gene platform effect
        between reference and spatial technology; 0 fixes the effect at 1 (same technology,
        or data already normalised across platforms).
      background: whether to model the additive per-gene background.
      proportion_prior: Dirichlet concentration (in pseudo-cells) of the prior that shrinks
        each spot's proportions towards the tissue's mean composition (learned); 0 turns it
        off (maximum likelihood proportions).
    """

    n_cell_types: int = 10
    n_genes: int = 2000
    hidden_dim: int = 128
    temperature: float = 1.0
    likelihood: str = "nb"
    mode: str = "amortized"
    n_spots: int | None = None
    platform_effect_scale: float = 0.5
    background: bool = False
    proportion_prior: float = 1.0

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field."""
        for name in ("n_cell_types", "n_genes", "hidden_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"SpatialDeconvolutionConfig.{name} must be an int >= 1; found {value!r}."
                raise ConfigError(msg)
        check_positive(self.temperature, "SpatialDeconvolutionConfig.temperature")
        for name in ("platform_effect_scale", "proportion_prior"):
            check_positive(
                getattr(self, name), f"SpatialDeconvolutionConfig.{name}", allow_zero=True
            )
        check_choice(self.likelihood, "SpatialDeconvolutionConfig.likelihood", LIKELIHOODS)
        check_choice(self.mode, "SpatialDeconvolutionConfig.mode", MODES)
        if self.mode == "direct" and (not isinstance(self.n_spots, int) or self.n_spots < 1):
            msg = (
                "SpatialDeconvolutionConfig.n_spots must be an int >= 1 when mode='direct' "
                f"(one logit vector per spot); found {self.n_spots!r}."
            )
            raise ConfigError(msg)


class SpatialDeconvolution(Operator):
    """Cell-type deconvolution of spatial spots with a count likelihood.

    Proportions are ``softmax(logits / temperature)``; the expected expression is
    ``scale_s * m_g * (pi_s @ R)_g + beta_g`` with the per-spot scale profiled out (see
    `diffomics.spatial.deconvolution_mean`). Train it in two stages, as
    `diffomics.spatial.deconvolve` does: the bulk composition on the pooled spots
    (`bulk_loss`, parameters `BULK_PARAMS`), then `initialize_from_bulk` (platform effect,
    prior composition and starting proportions), then the per-spot parameters
    (`loss`, the negative log-posterior per spot, parameters `SPOT_PARAMS`).

    Inputs (``data`` keys):
      ``spatial_expression``: `(n_spots, n_genes)`, >= 0, no all-zero spot.
      ``reference_profiles``: `(n_cell_types, n_genes)`, >= 0, no all-zero cell type.

    Outputs (added keys):
      ``proportions``: `(n_spots, n_cell_types)`, rows on the simplex.
      ``reconstructed``: `(n_spots, n_genes)`, expected expression in the units of the input.
      ``spot_scale``: `(n_spots,)`, spot depth / abundance in reference-profile units.

    Args:
      config: the `SpatialDeconvolutionConfig`.
      rngs: keyword-only Flax random streams for the encoder's initial weights.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> cfg = SpatialDeconvolutionConfig(n_cell_types=3, n_genes=5, hidden_dim=8)
      >>> op = SpatialDeconvolution(cfg, rngs=nnx.Rngs(0))
      >>> data = {"spatial_expression": jnp.ones((4, 5)), "reference_profiles": jnp.ones((3, 5))}
      >>> result, _, _ = op.apply(data, {}, None)
      >>> result["proportions"].shape, result["reconstructed"].shape
      ((4, 3), (4, 5))
    """

    input_keys = (K.SPATIAL_EXPRESSION, K.REFERENCE_PROFILES)

    def __init__(self, config: SpatialDeconvolutionConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        c = config
        if c.mode == "amortized":
            self.encoder = nnx.Sequential(
                linear(c.n_genes, c.hidden_dim, rngs=rngs),
                nnx.relu,
                linear(c.hidden_dim, c.n_cell_types, rngs=rngs),
            )
        else:
            self.logits = nnx.Param(jnp.zeros((c.n_spots, c.n_cell_types)))
        self.log_platform_effect = nnx.Param(jnp.zeros(c.n_genes))
        self.bulk_logits = nnx.Param(jnp.zeros(c.n_cell_types))
        self.log_background = nnx.Param(jnp.full(c.n_genes, jnp.log(0.01), default_float()))
        self.log_theta = nnx.Param(jnp.full(c.n_genes, jnp.log(10.0), default_float()))

    def _inputs(self, data: Mapping[str, Any], *, pooled: bool = False) -> tuple[Array, Array]:
        x = jnp.asarray(data[K.SPATIAL_EXPRESSION])
        reference = jnp.asarray(data[K.REFERENCE_PROFILES])
        c = self.config
        n_spots = c.n_spots if c.mode == "direct" and not pooled else None
        check_matrix(x, K.SPATIAL_EXPRESSION, shape=(n_spots, c.n_genes))
        check_matrix(reference, K.REFERENCE_PROFILES, shape=(c.n_cell_types, c.n_genes))
        check_counts(x, K.SPATIAL_EXPRESSION, row_name="spot")
        check_counts(reference, K.REFERENCE_PROFILES, row_name="cell type")
        return x, reference

    def _forward(
        self, data: Mapping[str, Any], spot_weight: Array | None = None
    ) -> dict[str, Array]:
        x, reference = self._inputs(data)
        c = self.config
        logits = self.encoder(log_relative_expression(x)) if c.mode == "amortized" else self.logits
        log_proportions = jax.nn.log_softmax(logits / c.temperature, axis=-1)
        proportions = jnp.exp(log_proportions)
        mu, scale = deconvolution_mean(
            x,
            proportions,
            reference,
            self.platform_effect(),
            self.background_fraction(),
            likelihood=c.likelihood,
            spot_weight=spot_weight,
        )
        return {
            "x": x,
            "log_proportions": log_proportions,
            K.PROPORTIONS: proportions,
            K.RECONSTRUCTED: mu,
            K.SPOT_SCALE: scale,
        }

    def platform_effect(self) -> Array:
        """Gene platform effect ``m``, shape `(n_genes,)`; all ones when switched off."""
        if self.config.platform_effect_scale == 0:
            return jnp.ones(self.config.n_genes)
        return jnp.exp(self.log_platform_effect[...])

    def background_fraction(self) -> Array:
        """Per-gene background ``b`` (fraction of the gene's mean over spots), `(n_genes,)`."""
        if not self.config.background:
            return jnp.zeros(self.config.n_genes)
        return jnp.exp(self.log_background[...])

    def prior_composition(self) -> Array:
        """Mean composition of the proportion prior (the bulk composition), `(n_cell_types,)`."""
        return jax.nn.softmax(self.bulk_logits[...])

    def outputs(
        self, data: Mapping[str, Any], *, spot_weight: Array | None = None
    ) -> dict[str, Array]:
        """Proportions, reconstructed expression and spot scale for the spots in `data`.

        `spot_weight` (`(n_spots,)`, 0 for padding rows) weighs the spots in the gene means
        of the background; None weighs all by 1.
        """
        out = self._forward(data, spot_weight)
        return {k: out[k] for k in (K.PROPORTIONS, K.RECONSTRUCTED, K.SPOT_SCALE)}

    def loss(
        self,
        data: Mapping[str, Any],
        *,
        edges: Array | None = None,
        spatial_prior: float = 0.0,
        spot_weight: Array | None = None,
    ) -> Array:
        """Negative log-posterior per spot (see `deconvolution_neg_log_posterior`).

        Args:
          data: dictionary with the operator's input keys.
          edges: spot graph from `diffomics.spatial.knn_graph`, `(n_edges, 2)`, for the CAR prior.
          spatial_prior: CAR precision on the centred log-ratio of proportions; 0 disables it.
          spot_weight: `(n_spots,)`, 1 for real spots and 0 for the padding rows that make
            spots divide over devices (`diffomics.core.row_weights`); None weighs all by 1.

        Returns:
          Scalar loss (nats per spot), differentiable in the parameters and in the inputs.
        """
        out = self._forward(data, spot_weight)
        return deconvolution_neg_log_posterior(
            out["x"],
            out[K.RECONSTRUCTED],
            out["log_proportions"],
            likelihood=self.config.likelihood,
            theta=jnp.exp(self.log_theta[...])[None, :] * out[K.SPOT_SCALE][:, None],
            background_fraction=self.background_fraction(),
            log_prior_mean=jax.nn.log_softmax(self.bulk_logits[...]),
            proportion_prior=self.config.proportion_prior,
            edges=edges,
            spatial_prior=spatial_prior,
            spot_weight=spot_weight,
        )

    def bulk_loss(self, data: Mapping[str, Any], *, spot_weight: Array | None = None) -> Array:
        """Negative log marginal likelihood of the bulk composition (platform effect integrated).

        See `diffomics.spatial.platform_effect_neg_log_marginal`; it involves only
        `BULK_PARAMS`. With ``platform_effect_scale=0`` it is a weighted least-squares fit of
        the pooled spots by a mixture of the reference on the log scale. `spot_weight` as
        in `loss`. Only the spots' sum over spots enters, so ``spatial_expression`` may hold
        any number of rows: the spots, or their sum as one row (when they are read in
        chunks).
        """
        x, reference = self._inputs(data, pooled=True)
        return platform_effect_neg_log_marginal(
            x,
            self.bulk_logits[...],
            reference,
            platform_effect_scale=self.config.platform_effect_scale,
            spot_weight=spot_weight,
        )

    def initialize_from_bulk(
        self, data: Mapping[str, Any], *, spot_weight: Array | None = None
    ) -> None:
        """Set the platform effect and the starting proportions from the bulk fit.

        The platform effect becomes its posterior mean given the fitted bulk composition
        (`diffomics.spatial.platform_effect_posterior_mean`); in ``mode="direct"`` every
        spot starts at the bulk composition, which is also the mean of the proportion prior.
        `spot_weight` and the rows of ``spatial_expression`` as in `bulk_loss`.
        """
        x, reference = self._inputs(data, pooled=True)
        c = self.config
        bulk_logits = self.bulk_logits[...]
        if c.platform_effect_scale > 0:
            self.log_platform_effect[...] = platform_effect_posterior_mean(
                x,
                bulk_logits,
                reference,
                platform_effect_scale=c.platform_effect_scale,
                spot_weight=spot_weight,
            )
        if c.mode == "direct":  # a new array: the old one may be split over other processes
            self.logits.set_value(
                jnp.broadcast_to(c.temperature * bulk_logits, self.logits.shape)
            )
