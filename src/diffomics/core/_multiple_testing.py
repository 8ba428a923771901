"""Multiple-testing corrections: Benjamini-Hochberg q-values with Storey's pi0 as an option."""

from __future__ import annotations

import numpy as np

from diffomics.core._errors import ConfigError, NonFiniteError

__all__ = ["benjamini_hochberg", "storey_pi0"]


def storey_pi0(pvalues: np.ndarray, *, lam: float = 0.5) -> float:
    """Storey's estimate of the proportion of true null hypotheses.

    ``pi0 = #{p > lam} / ((1 - lam) m)``, capped at 1.

    Args:
      pvalues: p-values in [0, 1], any shape.
      lam: tuning threshold in (0, 1).

    Returns:
      pi0 in (0, 1].

    References:
      Storey & Tibshirani, "Statistical significance for genomewide studies", PNAS 100:9440
      (2003), https://doi.org/10.1073/pnas.1530509100.

    Examples:
      >>> storey_pi0(np.linspace(0.0, 1.0, 101))
      1.0
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if not 0.0 < lam < 1.0:
        msg = f"lam must be in (0, 1); found {lam!r}."
        raise ConfigError(msg)
    pi0 = np.mean(p > lam) / (1.0 - lam)
    return float(np.clip(pi0, 1.0 / max(p.size, 1), 1.0))


def benjamini_hochberg(pvalues: np.ndarray, *, pi0: float = 1.0) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), optionally scaled by ``pi0``.

    ``q_(i) = min_{j >= i} pi0 * m * p_(j) / j`` over the sorted p-values, capped at 1.
    With ``pi0 = 1`` these are the BH adjusted p-values (``statsmodels``' ``fdr_bh``); with
    Storey's `storey_pi0` they are Storey's q-values.

    Args:
      pvalues: p-values in [0, 1], any shape; NaN is not allowed.
      pi0: proportion of true nulls, in (0, 1].

    Returns:
      q-values, same shape as `pvalues`, float64.

    Raises:
      NonFiniteError: a p-value is NaN.
      ConfigError: `pi0` out of range.

    References:
      Benjamini & Hochberg, "Controlling the false discovery rate", JRSS B 57:289 (1995),
      https://doi.org/10.1111/j.2517-6161.1995.tb02031.x.

    Examples:
      >>> benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5])).round(3).tolist()
      [0.04, 0.053, 0.053, 0.5]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if np.isnan(p).any():
        msg = f"pvalues holds {int(np.isnan(p).sum())} NaN value(s); drop or fix them first."
        raise NonFiniteError(msg)
    if not 0.0 < pi0 <= 1.0:
        msg = f"pi0 must be in (0, 1]; found {pi0!r}."
        raise ConfigError(msg)
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    ranked = pi0 * m * flat[order] / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    return q.reshape(p.shape)
