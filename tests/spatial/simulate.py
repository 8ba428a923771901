"""Planted-truth data for the deconvolution tests: counts drawn from the model itself.

Cell-type profiles have log-normal gene expression; a reference of single cells is drawn from
them with NB noise and varying library sizes; spots mix 2-12 cells with Dirichlet(0.5)
proportions, optionally through a log-normal gene platform effect.
"""

import anndata as ad
import numpy as np
import pandas as pd


def simulate(
    *,
    n_spots=200,
    n_types=5,
    n_genes=150,
    cells_per_type=80,
    theta=20.0,
    platform_sd=0.0,
    likelihood="nb",
    depth=40.0,
    seed=0,
    proportions=None,
    coords=None,
):
    rng = np.random.default_rng(seed)
    types = [f"type_{k}" for k in range(n_types)]
    genes = [f"gene_{g}" for g in range(n_genes)]
    profiles = np.exp(rng.normal(0.0, 1.2, size=(n_types, n_genes)))
    profiles *= depth * n_genes / profiles.sum(axis=1, keepdims=True)

    labels = np.repeat(types, cells_per_type)
    library = rng.lognormal(0.0, 0.3, size=labels.size)
    mean = profiles[np.repeat(np.arange(n_types), cells_per_type)] * library[:, None]
    cells = rng.negative_binomial(theta, theta / (theta + mean)).astype(np.float32)
    reference = ad.AnnData(
        cells,
        obs=pd.DataFrame({"cell_type": labels}, index=[f"cell_{i}" for i in range(labels.size)]),
        var=pd.DataFrame(index=genes),
    )

    if proportions is None:
        proportions = rng.dirichlet(np.full(n_types, 0.5), size=n_spots)
    n_spots = proportions.shape[0]
    n_cells = rng.integers(2, 13, size=n_spots)
    platform = (
        np.exp(rng.normal(0.0, platform_sd, size=n_genes)) if platform_sd else np.ones(n_genes)
    )
    mu = n_cells[:, None] * platform * (proportions @ profiles)
    if likelihood == "poisson":
        x = rng.poisson(mu)
    else:
        x = rng.negative_binomial(
            theta * n_cells[:, None], theta * n_cells[:, None] / (theta * n_cells[:, None] + mu)
        )
    names = [f"spot_{s}" for s in range(n_spots)]
    spatial = ad.AnnData(
        x.astype(np.float32), obs=pd.DataFrame(index=names), var=pd.DataFrame(index=genes)
    )
    spatial.obsm["proportions_true"] = pd.DataFrame(proportions, index=names, columns=types)
    spatial.obsm["spatial"] = (
        coords if coords is not None else rng.uniform(0, 100, size=(n_spots, 2))
    )
    spatial.uns["platform_effect_true"] = platform
    return spatial, reference
