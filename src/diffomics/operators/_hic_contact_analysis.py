"""`HiCContactAnalysis`: the cooltools statistics of a contact matrix as an NNX module."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffomics.core._checks import check_finite, check_positive, is_traced
from diffomics.core._errors import ConfigError, CountsError, ShapeError
from diffomics.core._numerics import float_dtype
from diffomics.core._operator import Operator, OperatorConfig
from diffomics.hic._balance import ice, marginals
from diffomics.hic._band import band_from_dense, band_mask, dense_from_band
from diffomics.hic._compartments import compartment_eigs
from diffomics.hic._dots import hiccups_kernels, local_expected, recommend_kernel_size
from diffomics.hic._expected import expected_cis
from diffomics.hic._insulation import insulation, soft_boundaries
from diffomics.operators._keys import HIC_KEYS as K

__all__ = ["HiCContactAnalysis", "HiCContactAnalysisConfig"]


def _int_at_least(value, name: str, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        msg = f"HiCContactAnalysisConfig.{name} must be an int >= {low}; found {value!r}."
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HiCContactAnalysisConfig(OperatorConfig):
    """Configuration of `HiCContactAnalysis`.

    Attributes:
      resolution: bin size in bp; converts `insulation_window` to bins and picks the
        HiCCUPS kernel size.
      hidden_dim: width of the distance-decay network.
      n_layers: number of linear layers of the distance-decay network (>= 1).
      distance_decay: learn the expected as the empirical per-diagonal mean times
        ``exp(g(log distance))`` with ``g`` the network (last layer zero-initialised, so
        it starts at the empirical mean, and ``decay_penalty`` = mean ``g^2`` regularises
        it towards it); False: the empirical per-diagonal mean itself.
      balance: ICE-balance the matrix (fixed `ice_iterations`, differentiable).
      ice_iterations: ICE iterations (steps after convergence change nothing).
      ignore_diags: diagonals set aside, as cooler (2).
      insulation_window: diamond size in bp, a multiple of `resolution`.
      boundary_threshold: insulation prominence (log2 units) at which a clear local
        minimum has boundary probability 0.5 (cooltools' Li threshold is typically 0.1-0.5).
      boundary_temperature: softness of ``tad_boundaries`` in log2 units, > 0.
      loop_kernel_size: HiCCUPS donut ``(w, p)`` in bins; None: from `resolution`
        (Rao et al. 2014: (3, 1) at 25 kb, (5, 2) at 10 kb, (7, 4) at 5 kb).
      compartment_correlation: take the eigenvector of the correlation of observed/expected
        (Lieberman-Aiden 2009; False: of observed/expected itself, as cooltools).
      temperature: softness of ``compartments = tanh(sqrt(n) v / temperature)``, where
        ``v`` is the unit leading eigenvector, > 0.
    """

    resolution: int = 10000
    hidden_dim: int = 64
    n_layers: int = 4
    distance_decay: bool = True
    balance: bool = True
    ice_iterations: int = 50
    ignore_diags: int = 2
    insulation_window: int = 100_000
    boundary_threshold: float = 0.1
    boundary_temperature: float = 0.05
    loop_kernel_size: tuple[int, int] | None = None
    compartment_correlation: bool = True
    temperature: float = 1.0

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field."""
        _int_at_least(self.resolution, "resolution", 1)
        _int_at_least(self.hidden_dim, "hidden_dim", 1)
        _int_at_least(self.n_layers, "n_layers", 1)
        _int_at_least(self.ice_iterations, "ice_iterations", 1)
        _int_at_least(self.ignore_diags, "ignore_diags", 0)
        _int_at_least(self.insulation_window, "insulation_window", self.resolution)
        if self.insulation_window % self.resolution:
            msg = (
                "HiCContactAnalysisConfig.insulation_window must be a multiple of resolution "
                f"{self.resolution}; found {self.insulation_window}."
            )
            raise ConfigError(msg)
        check_positive(self.boundary_threshold, "HiCContactAnalysisConfig.boundary_threshold")
        check_positive(self.boundary_temperature, "HiCContactAnalysisConfig.boundary_temperature")
        check_positive(self.temperature, "HiCContactAnalysisConfig.temperature")
        if self.loop_kernel_size is not None:
            w, p = self.loop_kernel_size
            if not (isinstance(w, int) and isinstance(p, int) and 0 <= p < w):
                msg = (
                    "HiCContactAnalysisConfig.loop_kernel_size must be (w, p) ints with "
                    f"0 <= p < w; found {self.loop_kernel_size!r}."
                )
                raise ConfigError(msg)

    @property
    def window_bins(self) -> int:
        """`insulation_window` in bins."""
        return self.insulation_window // self.resolution

    @property
    def kernel_size(self) -> tuple[int, int]:
        """The donut ``(w, p)`` used."""
        return self.loop_kernel_size or recommend_kernel_size(self.resolution)


class HiCContactAnalysis(Operator):
    """Hi-C statistics of a contact matrix, each differentiable, computed as cooltools does.

    Balancing, expected, compartments, insulation boundaries and loop enrichment:

    1. ICE balancing (`diffomics.hic.ice`, fixed iterations) of the raw counts, with bins
       without contacts (beyond the first `ignore_diags` diagonals) masked.
    2. Expected: the per-diagonal mean of balanced contacts over valid pixels
       (`diffomics.hic.expected_cis`), times ``exp(g(log distance))`` from the decay
       network when ``distance_decay``; ``normalized_contacts`` = balanced / expected.
    3. ``compartments``: the leading eigenvector of the observed/expected correlation
       (`diffomics.hic.compartment_eigs`), signed to correlate positively with
       ``phasing_track`` when given (else its largest entry is positive: A/B then
       arbitrary), squashed to [-1, 1] by ``tanh``; 0 at masked bins.
    4. ``tad_boundaries``: soft boundary probability from the diamond insulation profile
       (`diffomics.hic.insulation`, `diffomics.hic.soft_boundaries`).
    5. ``loop_scores``: observed / donut local expected (HiCCUPS, `local_expected`) per
       pixel; 0 where the donut touches masked pixels or the first diagonals.

    Dense in and out, for any number of bins; for whole chromosomes use
    `diffomics.hic.analyze`, which runs the same functions on banded storage.

    Inputs (``data`` keys):
      ``contact_matrix``: `(n_bins, n_bins)` symmetric raw counts, finite, non-negative.
      ``phasing_track`` (optional): `(n_bins,)`, higher in A (GC content, gene density).

    Outputs (added keys):
      ``normalized_contacts``, ``loop_scores``: `(n_bins, n_bins)`.
      ``compartments``, ``tad_boundaries``, ``balancing_weights``, ``insulation``
      (log2 score): `(n_bins,)`.
      ``expected``: `(n_bins,)` expected balanced contact frequency per distance.
      ``decay_penalty``: scalar, mean squared log-ratio of the learned to the empirical
      expected (add it to a training loss).

    Args:
      config: the `HiCContactAnalysisConfig`.
      rngs: keyword-only Flax random streams for the decay network.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> idx = np.arange(60)
      >>> lam = 200.0 / (1 + np.abs(idx[:, None] - idx[None, :]))
      >>> x = rng.poisson(np.triu(lam)); x = (x + np.triu(x, 1).T).astype("float32")
      >>> op = HiCContactAnalysis(HiCContactAnalysisConfig(resolution=25_000,
      ...     insulation_window=125_000), rngs=nnx.Rngs(0))
      >>> out, _, _ = op.apply({"contact_matrix": x}, {}, None)
      >>> out["loop_scores"].shape, out["compartments"].shape
      ((60, 60), (60,))
    """

    input_keys = (K.CONTACT_MATRIX,)
    optional_keys = (K.PHASING_TRACK,)

    def __init__(self, config: HiCContactAnalysisConfig, *, rngs: nnx.Rngs) -> None:
        self.config = c = config
        layers = []
        if c.distance_decay:
            widths = [1] + [c.hidden_dim] * (c.n_layers - 1) + [1]
            for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
                last = k == len(widths) - 2
                init = nnx.initializers.zeros if last else nnx.initializers.lecun_normal()
                layers.append(nnx.Linear(a, b, kernel_init=init, rngs=rngs))
                if not last:
                    layers.append(nnx.gelu)
        self.decay = nnx.Sequential(*layers) if layers else None

    def _check(self, x) -> None:
        shape = tuple(np.shape(x))
        if len(shape) != 2 or shape[0] != shape[1]:
            msg = f"contact_matrix must be a square (n_bins, n_bins) matrix; found shape {shape}."
            raise ShapeError(msg)
        if shape[0] < 3:
            msg = f"contact_matrix needs at least 3 bins; found {shape[0]}."
            raise ShapeError(msg)
        if is_traced(x):
            return
        check_finite(x, "contact_matrix")
        m = np.asarray(x)
        if (m < 0).any():
            msg = f"contact_matrix must hold non-negative counts; found {int((m < 0).sum())} < 0."
            raise CountsError(msg)
        if not np.allclose(m, m.T, rtol=1e-5, atol=1e-6 * max(float(np.abs(m).max()), 1.0)):
            msg = (
                "contact_matrix must be symmetric; the largest |A - A.T| is "
                f"{float(np.abs(m - m.T).max()):.3g}."
            )
            raise ShapeError(msg)
        off = np.abs(np.subtract.outer(np.arange(shape[0]), np.arange(shape[0])))
        if m[off >= self.config.ignore_diags].sum() == 0:
            msg = (
                f"contact_matrix has no contacts beyond the first {self.config.ignore_diags} "
                "diagonals (ignore_diags); nothing to analyse."
            )
            raise CountsError(msg)

    def outputs(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Compute the outputs (see the class docstring)."""
        c = self.config
        x = data[K.CONTACT_MATRIX]
        self._check(x)
        x = jnp.asarray(x, float_dtype(x))
        n = x.shape[0]
        iu, ju = np.triu_indices(n)
        counts = x[iu, ju]
        beyond = jnp.asarray(ju - iu >= c.ignore_diags)
        valid = marginals(iu, ju, jnp.where(beyond, counts, 0.0), n) > 0
        if c.balance:
            weights = ice(iu, ju, counts, valid, ignore_diags=c.ignore_diags,
                          max_iter=c.ice_iterations, differentiable=True).weights  # fmt: skip
        else:
            weights = valid.astype(x.dtype)
        balanced = x * weights[:, None] * weights[None, :]

        empirical = expected_cis(iu, ju, counts, weights, ignore_diags=c.ignore_diags)
        mean = empirical.balanced_avg
        known = jnp.isfinite(mean) & (mean > 0)
        log_expected = jnp.log(jnp.where(known, mean, 1.0))
        penalty = jnp.zeros((), x.dtype)
        if self.decay is not None:
            g = self.decay(jnp.log1p(jnp.arange(n, dtype=x.dtype))[:, None] / 10.0)[:, 0]
            log_expected = log_expected + g
            penalty = jnp.sum(jnp.where(known, g**2, 0.0)) / jnp.maximum(jnp.sum(known), 1)
        expected = jnp.where(known, jnp.exp(log_expected), jnp.nan)

        dist = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        pair = valid[:, None] & valid[None, :] & known[dist]
        e2d = jnp.where(pair, jnp.exp(log_expected)[dist], 1.0)
        oe = jnp.where(pair, balanced / e2d, 0.0)

        compartments = self._compartments(oe, pair, valid, data.get(K.PHASING_TRACK))
        win = c.window_bins
        n_diags = min(n, 2 * win)
        ins = insulation(
            band_from_dense(balanced, n_diags),
            band_mask(valid, n_diags),
            win,
            ignore_diags=c.ignore_diags,
        ).log2_score
        boundaries = soft_boundaries(
            ins, win, threshold=c.boundary_threshold, temperature=c.boundary_temperature
        )
        loops = self._loop_scores(balanced, log_expected, known, valid)
        return {
            K.NORMALIZED_CONTACTS: oe,
            K.COMPARTMENTS: compartments,
            K.TAD_BOUNDARIES: boundaries,
            K.LOOP_SCORES: loops,
            K.EXPECTED: expected,
            K.BALANCING_WEIGHTS: weights,
            K.INSULATION: ins,
            K.DECAY_PENALTY: penalty,
        }

    def _compartments(self, oe, pair, valid, track):
        c = self.config
        dist = np.abs(np.subtract.outer(np.arange(oe.shape[0]), np.arange(oe.shape[0])))
        oe = jnp.where(pair & (dist >= c.ignore_diags), oe, 1.0)  # set-aside pixels: O/E = 1
        eig = compartment_eigs(oe, valid, n_eigs=1, correlation=c.compartment_correlation)
        v = eig.eigvecs[0]
        v = v / jnp.maximum(jnp.linalg.norm(v), 1e-12)
        if track is not None:
            t = jnp.asarray(track, v.dtype)
            if t.shape != v.shape:
                msg = f"phasing_track must have shape {v.shape}; found {t.shape}."
                raise ShapeError(msg)
            t = jnp.where(valid, t - jnp.sum(jnp.where(valid, t, 0.0)) / jnp.sum(valid), 0.0)
            sign = jnp.sign(jnp.sum(t * v))
        else:
            sign = jnp.sign(v[jnp.argmax(jnp.abs(v))])
        sign = jax.lax.stop_gradient(jnp.where(sign == 0, 1.0, sign))
        scaled = sign * v * jnp.sqrt(jnp.sum(valid).astype(v.dtype)) / c.temperature
        return jnp.where(valid, jnp.tanh(scaled), 0.0)

    def _loop_scores(self, balanced, log_expected, known, valid):
        c = self.config
        n = balanced.shape[0]
        w, p = c.kernel_size
        band = band_from_dense(balanced, n)
        d = jnp.arange(n)[None, :]
        ok = band_mask(valid, n) & known[None, :] & (d >= c.ignore_diags)
        e_band = jnp.broadcast_to(jnp.where(known, jnp.exp(log_expected), 0.0)[None, :], band.shape)

        # halo rows and the 2w extra diagonals local_expected needs
        def pad(a, value):  # noqa: FBT001
            return jnp.pad(a, ((w, w), (0, 2 * w)), constant_values=value)

        local = local_expected(
            pad(jnp.where(ok, band, 0.0), 0.0),
            pad(jnp.where(ok, e_band, 0.0), 0.0),
            pad(~ok, value=True),
            {"donut": hiccups_kernels(w, p)["donut"]},
        )
        factor, n_nans = local.factor[0][:, :n], local.n_nans[0][:, :n]
        defined = jnp.isfinite(factor)
        lam = e_band * jnp.where(defined, factor, 0.0)  # no NaN in any gradient path
        good = ok & (n_nans == 0) & defined & (lam > 0)
        score = jnp.where(good, band / jnp.where(good, lam, 1.0), 0.0)
        return dense_from_band(score)
