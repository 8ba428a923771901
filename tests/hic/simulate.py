"""Simulated Hi-C maps with planted compartments, TADs, loops and bin biases."""

from __future__ import annotations

import dataclasses

import numpy as np

TAD_EDGES = (0, 30, 55, 90, 120, 150, 185, 210, 240)
LOOPS = ((31, 53), (56, 88), (91, 118), (151, 183), (60, 110), (125, 170))


@dataclasses.dataclass
class SimulatedMap:
    counts: np.ndarray  # (n, n) symmetric Poisson counts
    compartment: np.ndarray  # (n,) +1 (A) / -1 (B)
    boundaries: np.ndarray  # interior TAD edges (bin index of the first bin of a TAD)
    loops: tuple  # planted (i, j) pixels
    bias: np.ndarray  # (n,) multiplicative bin biases
    empty: np.ndarray  # bins without contacts


def simulate_map(
    *, n: int = 240, depth: float = 3000.0, tad_boost: float = 2.5, ab_strength: float = 0.5,
    loop_boost: float = 6.0, empty=(100, 101, 102), seed: int = 0,
) -> SimulatedMap:  # fmt: skip
    """Poisson counts with mean ``depth (1+d)^-1 x TAD x compartment x loop x b_i b_j``."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    dist = np.abs(idx[:, None] - idx[None, :])
    tad = np.searchsorted(np.asarray(TAD_EDGES), idx, side="right")
    ab = np.where((idx // 60) % 2 == 0, 1.0, -1.0)
    lam = depth / (1.0 + dist)
    lam = lam * np.where(tad[:, None] == tad[None, :], tad_boost, 1.0)
    lam = lam * (1.0 + ab_strength * np.outer(ab, ab))
    loops = tuple((i, j) for i, j in LOOPS if j < n)
    for i, j in loops:
        lam[i, j] *= loop_boost
        lam[j, i] *= loop_boost
    bias = rng.lognormal(0.0, 0.2, n)
    bias[list(empty)] = 0.0
    lam = lam * np.outer(bias, bias)
    upper = np.triu(rng.poisson(lam)).astype(np.float64)
    counts = upper + np.triu(upper, 1).T
    return SimulatedMap(
        counts, ab, np.asarray([e for e in TAD_EDGES[1:-1] if e < n]), loops, bias,
        np.asarray(empty),
    )
