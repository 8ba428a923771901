"""`diffomics.hic.analyze` on random dense matrices: valid tables or the documented error.

Maps have 24 or 40 bins (two compiled shapes); values are Poisson counts of a decaying
contact law, scaled, with all-zero rows, or a flat map. Regression example: counts of
1e30 crashed the HiCCUPS histogram (int64 overflow: a bare IndexError).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diffomics import ConfigError, CountsError, NonFiniteError, ShapeError
from diffomics.hic import analyze

RES = 10_000
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def _map(n_bins, scale, zero_rows, flat, seed):
    rng = np.random.default_rng(seed)
    if flat:
        m = np.ones((n_bins, n_bins))
    else:
        i = np.arange(n_bins)
        lam = 60.0 / (1.0 + np.abs(i[:, None] - i[None, :])) ** 0.8
        lam *= 1.0 + 0.5 * np.sign(np.sin(i / 4.0))[:, None] * np.sign(np.sin(i / 4.0))[None]
        upper = np.triu(rng.poisson(lam)).astype(np.float64)
        m = upper + np.triu(upper, 1).T
    rows = rng.choice(n_bins, size=zero_rows, replace=False)
    m[rows] = 0.0
    m[:, rows] = 0.0
    return m * scale


maps = st.builds(
    _map,
    n_bins=st.sampled_from([24, 40]),
    scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]),
    zero_rows=st.integers(0, 6),
    flat=st.booleans(),
    seed=st.integers(0, 2**16),
)


def _analyze(m, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ICE convergence warnings on odd maps
        return analyze(m, resolution=RES, progress=False, **kwargs)


@SETTINGS
@given(maps, st.booleans(), st.booleans())
@example(_map(40, 1e30, 0, flat=False, seed=0), True, True)
def test_random_maps_give_valid_tables_or_a_documented_error(m, balance, loops):
    before = m.copy()
    try:
        res = _analyze(m, balance=balance, loops=loops)
    except CountsError as err:  # too few bins survive cooler's filters
        assert "bin(s) left after filtering" in str(err), err
        return
    np.testing.assert_array_equal(m, before)  # the input is not modified
    n = m.shape[0]
    w = res.weights
    assert w.shape == (n,) and (np.isnan(w) | (np.isfinite(w) & (w > 0))).all()
    valid = np.isfinite(w)
    assert not valid[m.sum(0) == 0].any()  # empty bins are masked
    exp = res.expected
    assert (exp["n_valid"] >= 0).all()
    avg = exp["balanced.avg"].to_numpy()
    scored = (exp["n_valid"].to_numpy() > 0) & (exp["dist"].to_numpy() >= 2)  # ignore_diags
    assert np.isfinite(avg[scored]).all() and np.isnan(avg[~scored]).all()
    for k in (1, 2, 3):  # eigenvectors: finite on valid bins, NaN on masked, norm sqrt|eigval|
        e = res.compartments[f"E{k}"].to_numpy()
        assert np.isfinite(e[valid]).all() and np.isnan(e[~valid]).all()
        eigval = float(res.eigvals[f"eigval{k}"].iloc[0])
        assert np.isfinite(eigval)
        np.testing.assert_allclose(np.sum(e[valid] ** 2), abs(eigval), rtol=1e-3, atol=1e-6)
    for col in res.insulation.columns:
        values = res.insulation[col]
        if col.startswith(("log2_insulation_score", "boundary_strength")):
            assert not np.isinf(values.to_numpy()).any(), col
        if col.startswith("boundary_strength"):
            assert (values.dropna() >= 0).all(), col
    assert (res.boundaries["boundary_strength"] >= 0).all()
    if loops:
        dots = res.loops
        assert (dots["start1"] < dots["start2"]).all() and (dots["count"] >= 0).all()
        for col in [c for c in dots.columns if c.endswith(".qval")]:
            assert dots[col].between(0.0, 1.0).all(), col


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([1e-30, 1e-3, 1e3, 1e30]), st.integers(0, 2**16))
def test_balanced_statistics_do_not_depend_on_the_depth(scale, seed):
    """ICE removes any constant factor: compartments and insulation of c * A equal A's."""
    m = _map(40, 1.0, 2, flat=False, seed=seed)
    first = _analyze(m, loops=False)
    second = _analyze(m * scale, loops=False)
    for k in (1, 2, 3):
        a = first.compartments[f"E{k}"].to_numpy()
        b = second.compartments[f"E{k}"].to_numpy()
        np.testing.assert_allclose(np.abs(b), np.abs(a), atol=2e-3 * np.nanmax(np.abs(a)))
    cols = [c for c in first.insulation.columns if c.startswith("log2_insulation_score")]
    pd.testing.assert_frame_equal(second.insulation[cols], first.insulation[cols], atol=1e-3)


FAULTS = {
    "non_square": (ShapeError, "square"),
    "asymmetric": (ShapeError, "symmetric"),
    "negative": (CountsError, "non-negative"),
    "nan": (NonFiniteError, "non-finite"),
    "inf": (NonFiniteError, "non-finite"),
    "all_zero": (CountsError, "no contacts"),
    "vector": (ShapeError, "square"),
    "three_d": (ShapeError, "square"),
    "tiny": (CountsError, "bin(s) left"),
    "window": (ConfigError, "windows"),
    "weights": (ShapeError, "balance"),
    "threshold": (ConfigError, "boundary_threshold"),
}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(maps, st.sampled_from(sorted(FAULTS)), st.integers(0, 1000))
def test_bad_matrices_raise_the_documented_error(m, fault, where):
    expected, words = FAULTS[fault]
    n = m.shape[0]
    i, j = where % n, (where * 7 + 3) % n
    kwargs = {}
    if fault == "non_square":
        m = m[:, : n - 1 - where % 5]
    elif fault == "asymmetric":
        m[i, (i + 1 + where % (n - 1)) % n] += 1.0 + m.max()
    elif fault == "negative":
        m[i, j] = m[j, i] = -1.0
    elif fault == "nan":
        m[i, j] = m[j, i] = np.nan
    elif fault == "inf":
        m[i, j] = m[j, i] = np.inf
    elif fault == "all_zero":
        m[:] = 0.0
    elif fault == "vector":
        m = m[0]
    elif fault == "three_d":
        m = np.stack([m, m])
    elif fault == "tiny":
        m = m[: 1 + where % 5, : 1 + where % 5] + 1.0
    elif fault == "window":
        kwargs["windows"] = (RES * 3 + 1 + where,)
    elif fault == "weights":
        kwargs["balance"] = np.ones(n + 1 + where % 3)
    else:
        kwargs["boundary_threshold"] = "Otsu"
    with pytest.raises(expected, match=None) as info:
        _analyze(m, **kwargs)
    message = str(info.value)
    assert words in message, message
    if fault in ("non_square", "asymmetric", "negative", "nan", "inf", "all_zero"):
        assert "contact matrix" in message, message
