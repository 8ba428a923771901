"""Planted chromatin states: sample marks from an HMM with known states (numpy only).

Used by the tests, `tests/_scripts/hmmlearn_reference.py` and `benchmarks/chromatin_states.py`
(which run in other environments), so it imports nothing from diffomics.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Presence probability of six marks in four planted states (ChromHMM-like profiles).
MARKS = ("H3K4me3", "H3K27ac", "H3K4me1", "H3K27me3", "H3K36me3", "H3K9me3")
PROFILES = np.array(
    [
        [0.90, 0.80, 0.30, 0.05, 0.05, 0.02],  # active promoter
        [0.05, 0.70, 0.85, 0.05, 0.10, 0.02],  # enhancer
        [0.05, 0.02, 0.05, 0.85, 0.02, 0.10],  # polycomb repressed
        [0.02, 0.02, 0.02, 0.02, 0.70, 0.05],  # transcribed
        [0.02, 0.01, 0.02, 0.03, 0.03, 0.03],  # quiescent
    ]
)


class PlantedHMM(NamedTuple):
    """A simulated track: marks, the states that made them and the true parameters."""

    x: np.ndarray  # (n_bins, n_marks) float
    states: np.ndarray  # (n_bins,) int
    pi: np.ndarray  # (n_states,)
    transmat: np.ndarray  # (n_states, n_states)
    means: np.ndarray  # (n_states, n_marks): presence probability or mean count
    theta: float | None


def sticky_transitions(n_states: int, stay: float) -> np.ndarray:
    """Transition matrix that stays with probability `stay`, else moves uniformly."""
    a = np.full((n_states, n_states), (1.0 - stay) / (n_states - 1))
    np.fill_diagonal(a, stay)
    return a


def sample_states(n_bins: int, pi: np.ndarray, transmat: np.ndarray, rng) -> np.ndarray:
    states = np.empty(n_bins, dtype=np.int64)
    states[0] = rng.choice(len(pi), p=pi)
    u = rng.random(n_bins)
    cum = np.cumsum(transmat, axis=1)
    for t in range(1, n_bins):
        states[t] = min(np.searchsorted(cum[states[t - 1]], u[t], side="right"), len(pi) - 1)
    return states


def simulate(
    n_bins: int,
    *,
    model: str = "bernoulli",
    n_states: int = 4,
    n_marks: int = 6,
    stay: float = 0.95,
    depth: float = 10.0,
    theta: float = 5.0,
    seed: int = 0,
) -> PlantedHMM:
    """Sample `n_bins` bins of `n_marks` marks from `n_states` planted states.

    Bernoulli: presence probabilities `PROFILES`; poisson / negative_binomial: mean count
    ``0.3 + depth * PROFILES`` (NB with inverse dispersion `theta`).
    """
    rng = np.random.default_rng(seed)
    pi = np.full(n_states, 1.0 / n_states)
    transmat = sticky_transitions(n_states, stay)
    states = sample_states(n_bins, pi, transmat, rng)
    profiles = PROFILES[:n_states, :n_marks]
    if model == "bernoulli":
        means = profiles
        x = (rng.random((n_bins, n_marks)) < means[states]).astype(np.float64)
    else:
        means = 0.3 + depth * profiles
        mu = means[states]
        if model == "poisson":
            x = rng.poisson(mu).astype(np.float64)
        else:
            x = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float64)
    return PlantedHMM(x, states, pi, transmat, means, theta if model != "bernoulli" else None)


def adjusted_rand_index(a, b) -> float:
    """Hubert & Arabie's adjusted Rand index of two labelings (1 = same partition)."""
    a, b = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(n):
        return (n * (n - 1) / 2.0).sum()

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / pairs(np.array([len(a)], dtype=np.float64))
    top = 0.5 * (rows + cols)
    return 1.0 if top == expected else float((index - expected) / (top - expected))
