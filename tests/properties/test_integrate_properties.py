"""`integrate` on random modalities: a finite latent for every cell or the documented error.

Cell counts come from small buckets (1, 2, 5 or 30 cells) and training is two epochs of a
tiny network: the property is validity (finite latents, inputs untouched, every cell
accounted for), not the quality of the fit (tests/integration has that).
"""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diffomics import ConfigError, CountsError, MissingKeyError, NonFiniteError, ShapeError
from diffomics.integration import integrate

# every example compiles the training step for its shapes and likelihoods (a few seconds)
SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
DOCUMENTED = (ConfigError, CountsError, MissingKeyError, NonFiniteError, ShapeError)
TRAIN = {"latent_dim": 2, "hidden_dim": 4, "n_layers": 1, "max_epochs": 2, "batch_size": 16,
         "progress": False}  # fmt: skip


def _modalities(n_cells, n_features, likelihoods, scale, overlap, zero_cells, seed):
    rng = np.random.default_rng(seed)
    mods = {}
    for m, (name, lik) in enumerate(likelihoods.items()):
        shape = (n_cells, n_features[m])
        if lik == "bernoulli":
            x = (rng.random(shape) < 0.3).astype(np.float64)
        elif lik == "gaussian":
            x = rng.normal(size=shape) * scale
        else:
            x = rng.poisson(3.0, size=shape) * scale
        if zero_cells:
            x[0] = 0.0
        names = [f"c{i}" for i in range(n_cells)]
        if m == 1 and overlap == "partial" and n_cells > 1:
            names[-1] = "only_in_second"
        mods[name] = ad.AnnData(x.astype(np.float32), obs=pd.DataFrame(index=names))
    return mods, likelihoods


problems = st.builds(
    _modalities,
    n_cells=st.sampled_from([1, 2, 5, 30]),
    n_features=st.tuples(st.sampled_from([1, 4]), st.sampled_from([1, 6])),
    likelihoods=st.sampled_from([
        {"rna": "nb", "atac": "bernoulli"},
        {"rna": "zinb", "protein": "nb_mixture"},
        {"rna": "poisson", "other": "gaussian"},
        {"a": "gaussian", "b": "gaussian"},
    ]),
    scale=st.sampled_from([1.0, 1e4]),
    overlap=st.sampled_from(["full", "partial"]),
    zero_cells=st.booleans(),
    seed=st.integers(0, 2**16),
)  # fmt: skip


@SETTINGS
@given(problems, st.sampled_from(["inner", "outer"]))
def test_random_modalities_give_finite_latents_or_a_documented_error(problem, join):
    mods, liks = problem
    before = {name: (a.X.copy(), list(a.obs_names)) for name, a in mods.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unmatched cells are reported by a warning
            model = integrate(mods, likelihoods=liks, join=join, **TRAIN)
    except DOCUMENTED as err:
        assert str(err)
        return
    z = model.latent()
    assert z.shape == (len(model.cells), 2) and np.isfinite(z).all()
    names = [set(a.obs_names) for a in mods.values()]
    expected = set.intersection(*names) if join == "inner" else set.union(*names)
    assert set(model.cells) == expected  # every cell accounted for
    assert np.isfinite(model.history[["train_loss", "validation_loss"]].to_numpy()).all()
    for name, adata in mods.items():
        x, obs_names = before[name]
        np.testing.assert_array_equal(adata.X, x)  # inputs untouched ...
        assert list(adata.obs_names) == obs_names
        if set(obs_names) <= set(model.cells):  # ... but for the documented latent
            assert np.isfinite(adata.obsm["X_diffomics"]).all()


FAULTS = {
    "nan": (NonFiniteError, "rna"),
    "inf": (NonFiniteError, "rna"),
    "negative_counts": (CountsError, "rna"),
    "zero_features": (ShapeError, "zero features"),
    "duplicated_cells": (ShapeError, "duplicated"),
    "no_shared_cell": (ShapeError, "no cell"),
    "unknown_likelihood_name": (MissingKeyError, "likelihoods"),
}


@SETTINGS
@given(problems, st.sampled_from(sorted(FAULTS)))
@example(  # the bad value once sat in a cell that join="inner" leaves out: no error is due
    _modalities(2, (1, 1), {"rna": "nb", "atac": "bernoulli"}, 1.0, "partial", False, 0), "inf"
)
def test_bad_modalities_raise_the_documented_error_naming_the_problem(problem, fault):
    mods = {"rna" if i == 0 else name: a for i, (name, a) in enumerate(problem[0].items())}
    first = next(iter(problem[1]))
    liks = {"rna": "nb", **{name: lik for name, lik in problem[1].items() if name != first}}
    error, match = FAULTS[fault]
    rna = mods["rna"]
    rna.X = np.random.default_rng(0).poisson(3.0, rna.shape).astype(np.float32)  # counts
    # a bad value in a cell that every modality has (join="inner" leaves the others out)
    shared = set.intersection(*(set(a.obs_names) for a in mods.values()))
    kept = [i for i, name in enumerate(rna.obs_names) if name in shared]
    if fault in ("nan", "inf", "negative_counts") and not kept:
        return
    if fault == "nan":
        rna.X[kept[0], 0] = np.nan
    elif fault == "inf":
        rna.X[kept[-1], -1] = np.inf
    elif fault == "negative_counts":
        rna.X[kept[0], -1] = -2.0
    elif fault == "zero_features":
        mods["rna"] = rna[:, :0].copy()
    elif fault == "duplicated_cells":
        if rna.n_obs < 2:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rna.obs_names = ["c0"] * rna.n_obs
    elif fault == "no_shared_cell":
        rna.obs_names = [f"x{i}" for i in range(rna.n_obs)]
    else:
        liks = {**liks, "missing": "nb"}
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        integrate(mods, likelihoods=liks, **TRAIN)
