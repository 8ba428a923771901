"""Dot clustering as cooltools' (BIRCH) and the fast compartment eigensolver."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from diffomics.hic import birch_labels, compartment_eigs

DATA = Path(__file__).parents[1] / "data" / "hic"


def _same_partition(a, b):
    table = pd.crosstab(np.asarray(a), np.asarray(b))
    return bool(((table > 0).sum(1) == 1).all() and ((table > 0).sum(0) == 1).all())


def test_birch_matches_cooltools_clustering_of_enriched_pixels():
    # cooltools 0.7.1 / scikit-learn Birch labels: tests/_scripts/hic_birch_reference.py
    ref = pd.read_csv(DATA / "cooltools_chr20_25kb_enriched_pixels.tsv.gz", sep="\t")
    labels, centroids = birch_labels(ref[["start1", "start2"]].to_numpy(float), 20_000)
    assert _same_partition(labels, ref["c_label"])
    assert len(np.unique(labels)) == ref["c_label"].nunique() == 409


def test_birch_blobs_have_the_threshold_radius():
    # 25 kb bins, 20 kb radius: a pair merges (radius 12.5 kb), so does a diagonal pair
    # (17.7 kb), a row of three does not (20.4 kb); far points stay alone
    pts = np.array([[0, 0], [0, 1], [0, 2], [10, 10], [11, 11], [30, 30]]) * 25_000.0
    labels, centroids = birch_labels(pts, 20_000)
    assert labels.tolist() == [0, 0, 1, 2, 2, 3]
    np.testing.assert_allclose(centroids[0], [0, 12_500])
    # each blob's root-mean-square distance to its centroid is within the threshold
    rng = np.random.default_rng(0)
    cloud = rng.uniform(0, 1_000_000, size=(300, 2))
    labels, centroids = birch_labels(cloud, 50_000)
    for k in np.unique(labels):
        members = cloud[labels == k]
        radius = np.sqrt(np.mean(np.sum((members - members.mean(0)) ** 2, axis=1)))
        assert radius <= 50_000 * 1.5  # relabelled to the nearest final centroid
    assert birch_labels(np.zeros((0, 2)), 1.0)[0].shape == (0,)


def test_lobpcg_gives_the_eigh_eigenpairs_with_negative_eigenvalues():
    # planted spectrum: the third eigenvalue by magnitude is negative, as on real maps
    n = 200
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.normal(size=(n, n)))
    spectrum = np.r_[50.0, 30.0, -20.0, rng.uniform(-2, 2, n - 3)]
    m = (basis * spectrum) @ basis.T
    oe = jnp.asarray(m + 1.0, jnp.float32)  # compartment_eigs subtracts 1
    valid = jnp.ones(n, bool)
    kwargs = {"n_eigs": 3, "clip_percentile": None}
    fast = jax.jit(lambda o: compartment_eigs(o, valid, solver="lobpcg", **kwargs))(oe)
    full = compartment_eigs(oe, valid, solver="eigh", **kwargs)
    np.testing.assert_allclose(fast.eigvals, [50.0, 30.0, -20.0], rtol=1e-4)
    np.testing.assert_allclose(fast.eigvals, full.eigvals, rtol=1e-4)
    for a, b in zip(np.asarray(fast.eigvecs), np.asarray(full.eigvecs), strict=True):
        np.testing.assert_allclose(abs(a @ b), b @ b, rtol=1e-3)  # same vector up to sign
    with pytest.raises(ValueError, match="solver"):
        compartment_eigs(oe, valid, solver="arpack")
