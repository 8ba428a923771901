"""The same seed gives bitwise-identical results; a different seed changes what is random.

Deconvolution (`tests/spatial/test_deconvolve.py`), the VAE's noise and `integrate`
(initialisation, split, shuffling, noise; `tests/integration/test_multiomics_vae.py`) and
the HMM fit (`tests/epigenomics`) have their own seed tests; here: the spatial-gene test
(its permutation null) and Hi-C (no randomness: two runs are identical).
"""

import numpy as np
import pandas as pd

from tests.hic.simulate import simulate_map
from tests.spatial.test_spatial_genes import simulate_counts


def test_spatial_genes_same_seed_same_table_other_seed_other_null():
    from diffomics.spatial import spatial_genes

    adata = simulate_counts(n_spots=80, n_spatial=2, n_null=6, seed=5)
    first, again, other = (spatial_genes(adata.copy(), seed=s, progress=False) for s in (0, 0, 1))
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert not np.array_equal(first["pval"], other["pval"])  # permutation null resampled
    np.testing.assert_array_equal(first["llr"], other["llr"])  # the statistic is not random


def test_hic_analysis_is_deterministic():
    from diffomics.hic import analyze, from_dense

    sim = simulate_map(n=200, depth=800.0, seed=2)
    first, second = (analyze(from_dense(sim.counts, resolution=10_000)) for _ in range(2))
    for name in ("expected", "compartments", "insulation", "boundaries", "loops"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name),
                                      check_exact=True)  # fmt: skip
    np.testing.assert_array_equal(first.weights, second.weights)
