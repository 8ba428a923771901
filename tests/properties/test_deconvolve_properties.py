"""`deconvolve` on random AnnData pairs: proportions on the simplex or the documented error.

Shapes come from small buckets (1, 3 or 8 spots; 1, 3 or 10 genes; 1, 2 or 4 cell types)
so that the jitted fits compile a handful of times; fits are short (`max_steps=20`): the
property is about validity, not accuracy (the planted-truth tests are in tests/spatial).
"""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffomics import (
    ConfigError,
    CountsError,
    GeneMatchError,
    MissingKeyError,
    NonFiniteError,
    ShapeError,
)
from diffomics.spatial import deconvolve

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
DOCUMENTED = (ConfigError, CountsError, GeneMatchError, MissingKeyError, NonFiniteError,
              ShapeError)  # fmt: skip


def _problem(n_spots, n_genes, n_types, scale, integers, duplicated_spots, seed):
    rng = np.random.default_rng(seed)
    profiles = rng.gamma(0.7, 5.0, size=(n_types, n_genes)) + 0.1
    labels = np.repeat(np.arange(n_types), 6)  # six cells of each type (NB dispersion: >= 5)
    cells = rng.poisson(profiles[labels]).astype(np.float64)
    cells[:, 0] += 1.0  # no empty cell
    proportions = rng.dirichlet(np.ones(n_types), size=n_spots)
    x = rng.poisson(10.0 * proportions @ profiles).astype(np.float64) * scale
    x[:, 0] += scale  # no empty spot
    if not integers:
        x = x * rng.uniform(0.5, 1.5, size=x.shape)
    genes = [f"g{j}" for j in range(n_genes)]
    spot_names = [f"s{i % 2 if duplicated_spots else i}" for i in range(n_spots)]
    spatial = ad.AnnData(x.astype(np.float32), obs=pd.DataFrame(index=spot_names),
                         var=pd.DataFrame(index=genes))  # fmt: skip
    spatial.obsm["spatial"] = rng.uniform(0, 10, size=(n_spots, 2))
    reference = ad.AnnData(
        cells.astype(np.float32),
        obs=pd.DataFrame({"cell_type": [f"t{k}" for k in labels]},
                         index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes),
    )  # fmt: skip
    return spatial, reference


problems = st.builds(
    _problem,
    n_spots=st.sampled_from([1, 3, 8]),
    n_genes=st.sampled_from([1, 3, 10]),
    n_types=st.sampled_from([1, 2, 4]),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
    integers=st.booleans(),
    duplicated_spots=st.booleans(),
    seed=st.integers(0, 2**16),
)
settings_ = st.fixed_dictionaries({
    "likelihood": st.sampled_from(["nb", "poisson", "gaussian"]),
    "mode": st.sampled_from(["direct", "amortized"]),
    "background": st.booleans(),
    "spatial_prior": st.sampled_from([0.0, 1.0]),
})  # fmt: skip


def _run(spatial, reference, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-integer counts and dropped genes are reported
        return deconvolve(spatial, reference, "cell_type", max_steps=20, hidden_dim=4,
                          n_neighbors=1, progress=False, **kwargs)  # fmt: skip


@SETTINGS
@given(problems, settings_)
def test_random_inputs_give_proportions_on_the_simplex_or_a_documented_error(problem, kwargs):
    spatial, reference = problem
    x, obs, ref_x = spatial.X.copy(), spatial.obs.copy(), reference.X.copy()
    try:
        result = _run(spatial, reference, **kwargs)
    except DOCUMENTED as err:
        assert str(err)  # a message naming the problem, not a bare exception
        return
    p = result.proportions.to_numpy()
    assert p.shape == (spatial.n_obs, reference.obs["cell_type"].nunique())
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert list(result.proportions.index) == list(spatial.obs_names)
    np.testing.assert_array_equal(spatial.obsm["proportions"], p)
    assert np.isfinite(result.fit.history).all()
    # the inputs are untouched; only the documented fields were added
    np.testing.assert_array_equal(spatial.X, x)
    np.testing.assert_array_equal(reference.X, ref_x)
    pd.testing.assert_frame_equal(spatial.obs.drop(columns=[c for c in spatial.obs
                                                            if c not in obs]), obs)  # fmt: skip


FAULTS = {
    "nan_spot": (NonFiniteError, "spatial"),
    "inf_reference": (NonFiniteError, "reference"),
    "negative_spot": (CountsError, "spatial"),
    "empty_spot": (CountsError, "spot"),
    "empty_type": (CountsError, "t0"),
    "no_shared_genes": (GeneMatchError, "gene names"),
    "duplicated_genes": (GeneMatchError, "duplicated"),
    "missing_labels": (MissingKeyError, "cell_type"),
    "spatial_prior_without_coordinates": (MissingKeyError, "spatial"),
}


@SETTINGS
@given(problems, st.sampled_from(sorted(FAULTS)))
def test_bad_inputs_raise_the_documented_error_naming_the_problem(problem, fault):
    spatial, reference = problem
    error, match = FAULTS[fault]
    kwargs = {}
    if fault == "nan_spot":
        spatial.X[0, 0] = np.nan
    elif fault == "inf_reference":
        reference.X[-1, 0] = np.inf
    elif fault == "negative_spot":
        spatial.X[-1, -1] = -1.0
    elif fault == "empty_spot":
        spatial.X[-1] = 0.0
    elif fault == "empty_type":
        reference.X[reference.obs["cell_type"].to_numpy() == "t0"] = 0.0
    elif fault == "no_shared_genes":
        reference.var_names = [f"other{j}" for j in range(reference.n_vars)]
    elif fault == "duplicated_genes":
        if spatial.n_vars < 2:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata warns about non-unique names
            spatial.var_names = ["g0"] * spatial.n_vars
    elif fault == "missing_labels":
        reference.obs = reference.obs.rename(columns={"cell_type": "celltype"})
    else:
        del spatial.obsm["spatial"]
        kwargs["spatial_prior"] = 1.0
    with pytest.raises(error, match=match):
        _run(spatial, reference, **kwargs)
