"""Reference profiles, gene matching, pseudo-spots, graphs and metrics against slow oracles."""

import anndata as ad
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from diffomics import ConfigError, GeneMatchError, MissingKeyError
from diffomics.spatial import (
    car_penalty,
    knn_graph,
    match_genes,
    pool_pseudo_spots,
    proportion_metrics,
    reference_dispersion,
    reference_profiles,
)


def _cells(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(3.0, size=(n, 4)).astype(np.float32) + 1
    obs = pd.DataFrame(
        {"t": rng.choice(["b", "a", "c"], size=n)}, index=[f"c{i}" for i in range(n)]
    )
    cells = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=list("wxyz")))
    cells.obsm["spatial"] = rng.uniform(0, 10, size=(n, 2))
    return cells


@pytest.mark.parametrize("library_normalize", [False, True])
def test_reference_profiles_match_a_loop(library_normalize):
    cells = _cells()
    got = reference_profiles(cells, "t", library_normalize=library_normalize)
    x = np.asarray(cells.X, dtype=np.float64)
    if library_normalize:
        tot = x.sum(1)
        x = x * np.median(tot) / tot[:, None]
    for label in "abc":
        np.testing.assert_allclose(got.loc[label], x[cells.obs.t == label].mean(0), rtol=1e-5)
    assert list(got.index) == ["a", "b", "c"]


def test_reference_profiles_report_empty_cells():
    cells = _cells()
    cells.X[0] = 0.0
    with pytest.warns(UserWarning, match="left out 1 cell"):
        reference_profiles(cells, "t")
    with pytest.raises(MissingKeyError, match="no column 'u'"):
        reference_profiles(cells, "u")


def test_match_genes_reports_and_rejects_duplicates():
    shared, report = match_genes(["a", "b", "c", "d"], ["d", "b", "q"])
    assert shared == ["b", "d"]
    assert report == {"n_shared": 2, "n_dropped_spatial": 2, "n_dropped_reference": 1}
    with pytest.raises(GeneMatchError, match="duplicated"):
        match_genes(["a", "a"], ["a"])


def test_pseudo_spots_sum_cells_and_know_their_truth():
    cells = _cells(200)
    spots = pool_pseudo_spots(cells, "t", spot_size=2.5, min_cells=1)
    assert spots.obs["n_cells"].sum() == 200
    np.testing.assert_allclose(spots.X.sum(), cells.X.sum(), rtol=1e-6)
    truth = spots.obsm["proportions_true"]
    np.testing.assert_allclose(truth.sum(1), 1.0)
    # oracle: recompute one spot's composition by hand
    xy = cells.obsm["spatial"]
    square = np.floor((xy - xy.min(0)) / 2.5).astype(int)
    name = spots.obs_names[0]
    i, j = (int(v) for v in name.split("_")[1:])
    members = (square[:, 0] == i) & (square[:, 1] == j)
    expected = cells.obs.t[members].value_counts(normalize=True)
    for label, frac in expected.items():
        assert truth.loc[name, label] == pytest.approx(frac)
    dropped = pool_pseudo_spots(cells, "t", spot_size=2.5, min_cells=4)
    assert dropped.uns["pseudo_spots"]["n_cells_dropped"] + dropped.obs["n_cells"].sum() == 200


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(40, 2))
    edges = knn_graph(xy, n_neighbors=3)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    expected = set()
    for i in range(40):
        for j in np.argsort(d[i])[:3]:
            expected.add((min(i, j), max(i, j)))
    assert set(map(tuple, edges.tolist())) == expected
    with pytest.raises(ConfigError, match="n_neighbors"):
        knn_graph(xy, n_neighbors=40)


def test_car_penalty_is_half_the_squared_differences():
    v = jnp.array([[0.0, 1.0], [2.0, 1.0], [2.0, 3.0]])
    edges = jnp.array([[0, 1], [1, 2]])
    assert float(car_penalty(v, edges)) == pytest.approx(0.5 * (4.0 + 4.0))


def test_proportion_metrics_match_scipy():
    rng = np.random.default_rng(0)
    t = pd.DataFrame(rng.dirichlet(np.ones(4), 30), columns=list("abcd"))
    p = pd.DataFrame(rng.dirichlet(np.ones(4), 30), columns=list("dcba"))
    m = proportion_metrics(t, p)
    p_aligned = p[list("abcd")].to_numpy()
    pairs = zip(t.to_numpy(), p_aligned, strict=True)
    jsd = np.mean([jensenshannon(a, b, base=2) ** 2 for a, b in pairs])
    assert m["jsd"] == pytest.approx(jsd)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((t.to_numpy() - p_aligned) ** 2)))
    r = [np.corrcoef(t[c], p[c])[0, 1] for c in "abcd"]
    assert m["pearson_type"] == pytest.approx(np.mean(r))
    assert m["n_types_scored"] == 4


def test_reference_dispersion_recovers_planted_theta_despite_size_factors():
    rng = np.random.default_rng(1)
    n_cells, n_genes, theta = 600, 120, np.array([0.5, 2.0, 10.0])
    labels = np.repeat(["a", "b"], n_cells // 2)
    mu = np.where(labels[:, None] == "a", 8.0, 20.0) * np.ones((1, n_genes))
    size = rng.lognormal(0.0, 0.5, size=(n_cells, 1))  # big per-cell size variation
    th = np.tile(theta, n_genes // 3)[None, :]
    x = rng.negative_binomial(th, th / (th + size * mu)).astype(np.float32)
    obs = pd.DataFrame({"t": labels}, index=[f"c{i}" for i in range(n_cells)])
    got = reference_dispersion(ad.AnnData(x, obs=obs), "t").to_numpy()
    for k, value in enumerate(theta):
        assert np.median(got[k::3]) == pytest.approx(value, rel=0.25)
