"""Deconvolution of pseudo-spots pooled from real osmFISH cells (true proportions known).

The spots and the reference are built exactly as in ``benchmarks/deconvolution.py`` (half of
each type's cells for the reference, the other half pooled on a 1200-pixel grid).
"""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import nnls

from diffomics.datasets import osmfish
from diffomics.spatial import (
    deconvolve,
    pool_pseudo_spots,
    proportion_metrics,
    reference_profiles,
    split_cells,
)


@pytest.fixture(scope="module")
def osmfish_spots():
    reference, cells = split_cells(osmfish(), "cell_type", fraction=0.5, seed=0)
    spots = pool_pseudo_spots(cells, "cell_type", spot_size=1200.0)
    return spots, reference


@pytest.fixture(scope="module")
def ours(osmfish_spots):
    spots, reference = osmfish_spots
    result = deconvolve(spots.copy(), reference, "cell_type", progress=False)
    return proportion_metrics(spots.obsm["proportions_true"], result.proportions)


def test_beats_nnls_on_real_osmfish_pseudo_spots(osmfish_spots, ours):
    spots, reference = osmfish_spots
    truth = spots.obsm["proportions_true"]
    for library_normalize in (True, False):
        prof = reference_profiles(reference, "cell_type", library_normalize=library_normalize)
        w = np.array([nnls(prof.to_numpy().T, x)[0] for x in np.asarray(spots.X)])
        w = pd.DataFrame(w / w.sum(1, keepdims=True), index=spots.obs_names, columns=prof.index)
        baseline = proportion_metrics(truth, w)
        assert ours["rmse"] < baseline["rmse"]
        assert ours["jsd"] < baseline["jsd"]
        assert ours["pearson_type"] > baseline["pearson_type"]


def test_at_least_as_accurate_as_cell2location_on_the_same_spots(osmfish_spots, ours):
    """cell2location 0.1.5's proportions on these spots, from `make bench-deconv`."""
    from pathlib import Path

    spots, _ = osmfish_spots
    path = Path(__file__).parents[1] / "data" / "cell2location_osmfish_proportions.csv.gz"
    c2l = pd.read_csv(path, index_col=0)
    assert list(c2l.index) == list(spots.obs_names)
    peer = proportion_metrics(spots.obsm["proportions_true"], c2l)
    assert peer["rmse"] == pytest.approx(0.1043, abs=1e-3)  # as in benchmarks/results
    assert ours["rmse"] < peer["rmse"]
    assert ours["jsd"] < peer["jsd"]
