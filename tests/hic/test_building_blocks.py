"""The Hi-C statistics against brute-force definitions on small matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from diffomics.hic import (
    band_from_dense,
    band_from_pixels,
    band_mask,
    boundary_strength,
    dense_from_band,
    expected_cis,
    hiccups_kernels,
    ice,
    ice_filters,
    insulation,
    lambda_thresholds,
    li_threshold,
    local_expected,
    marginals,
    soft_boundaries,
)
from diffomics.hic._dots import lambda_edges
from tests.hic.simulate import simulate_map


def _pixels(m):
    i, j = np.nonzero(np.triu(m))
    return i, j, m[i, j]


@pytest.fixture(scope="module")
def sim():
    return simulate_map(n=120, depth=800.0, empty=(40, 41))


def test_band_round_trip_and_pixels(sim):
    m = sim.counts
    band = band_from_dense(jnp.asarray(m), 120)
    np.testing.assert_allclose(dense_from_band(band), m)
    i, j, v = _pixels(m)
    np.testing.assert_allclose(band_from_pixels(i, j, v, 120, 15), band[:, :15])
    mask = np.asarray(band_mask(np.arange(120) != 7, 15))
    assert not mask[7].any() and not mask[0, 7] and mask[0, 6] and not mask[119, 1]


def test_ice_matches_dense_iterative_correction(sim):
    m = sim.counts.copy()
    i, j, v = _pixels(m)
    valid, report = ice_filters(i, j, v, 120)
    assert not valid[[40, 41]].any() and report["min_nnz"] >= 2
    res = ice(i, j, v, valid)
    # reference: the textbook dense loop (Imakaev 2012) on the same masked matrix
    a = m * np.outer(valid, valid)
    a[np.abs(np.subtract.outer(np.arange(120), np.arange(120))) < 2] = 0
    bias = valid.astype(float)
    for _ in range(500):
        s = (a * np.outer(bias, bias)).sum(1)
        s = np.where(s > 0, s / s[s > 0].mean(), 1.0)
        bias /= s
    balanced_ref = a * np.outer(bias, bias)
    balanced_ref /= balanced_ref.sum(1)[valid].mean()
    w = np.asarray(res.weights)
    balanced = a * np.outer(w, w)
    assert bool(res.converged)
    np.testing.assert_allclose(balanced.sum(1)[valid], 1.0, atol=1e-4)
    np.testing.assert_allclose(balanced[np.ix_(valid, valid)], balanced_ref[np.ix_(valid, valid)],
                               rtol=1e-3, atol=1e-9)  # fmt: skip
    assert (w[~valid] == 0).all()
    # on a map without structure the weights undo the planted biases
    flat = simulate_map(n=120, depth=800.0, tad_boost=1.0, ab_strength=0.0, loop_boost=1.0)
    i, j, v = _pixels(flat.counts)
    keep = (flat.bias > 0) & (np.abs(np.arange(120) - 60) < 40)  # ends see fewer contacts
    w = np.asarray(ice(i, j, v, ice_filters(i, j, v, 120)[0]).weights)
    assert scipy.stats.spearmanr(w[keep], 1 / flat.bias[keep])[0] > 0.95


def test_ice_differentiable_matches_while_loop_and_has_gradients(sim):
    i, j, v = _pixels(sim.counts)
    valid, _ = ice_filters(i, j, v, 120)
    a = ice(i, j, v, valid, max_iter=300)
    b = ice(i, j, v, valid, max_iter=300, differentiable=True)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-5)
    assert int(a.n_iter) == int(b.n_iter)
    g = jax.grad(lambda c: jnp.sum(ice(i, j, c, valid, max_iter=30, differentiable=True)
                                   .weights ** 2))(jnp.asarray(v, jnp.float32))  # fmt: skip
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_marginals_counts_the_diagonal_once():
    m = np.array([[2.0, 1.0], [1.0, 3.0]])
    i, j, v = _pixels(m)
    np.testing.assert_allclose(marginals(i, j, jnp.asarray(v), 2), m.sum(1))


def test_expected_cis_is_the_per_diagonal_mean_over_valid_pixels(sim):
    m = sim.counts
    i, j, v = _pixels(m)
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 2.0, 120)
    w[[40, 41, 77]] = 0.0
    e = expected_cis(i, j, v, w, ignore_diags=2)
    bal = m * np.outer(w, w)
    ok = np.outer(w > 0, w > 0)
    for d in (0, 1, 2, 3, 17, 60, 119):
        diag_ok = np.diagonal(ok, d)
        assert float(e.n_valid[d]) == diag_ok.sum()
        want = np.diagonal(bal, d)[diag_ok].mean()
        if d < 2:
            assert np.isnan(e.balanced_avg[d])
        else:
            np.testing.assert_allclose(float(e.balanced_avg[d]), want, rtol=1e-5)


def _insulation_brute(bal, valid, window, ignore_diags):
    n = bal.shape[0]
    total, npx = np.zeros(n), np.zeros(n)
    for k in range(n):
        for a in range(window):
            for b in range(window):
                r, c = k - a, k + b
                if a + b < ignore_diags or r < 0 or c >= n:
                    continue
                if valid[r] and valid[c]:
                    total[k] += bal[r, c]
                    npx[k] += 1
    score = np.where(npx > 0, total / np.where(npx > 0, npx, 1), np.nan)
    score[score == 0] = np.nan
    return np.log2(score / np.nanmedian(score)), npx


@pytest.mark.parametrize("window", [2, 3, 6])
def test_insulation_matches_the_diamond_definition_on_any_band(sim, window):
    valid = np.ones(120, bool)
    valid[[40, 41]] = False
    bal = sim.counts / 1000.0
    want, npx = _insulation_brute(bal, valid, window, 2)
    for n_diags in (2 * window, 120):  # banded and dense paths agree
        band = band_from_dense(jnp.asarray(bal), n_diags)
        ins = insulation(band, band_mask(valid, n_diags), window, ignore_diags=2)
        np.testing.assert_allclose(ins.n_pixels, npx)
        np.testing.assert_allclose(ins.log2_score, want, rtol=1e-4, atol=1e-5)


def test_insulation_keeps_float32_precision_along_a_long_map():
    # 20,000 bins whose main diagonals are 1e5 times the far ones: differences of sums
    # accumulated along the chromosome cancel in float32 (they were off by up to 2.5e-4
    # here); sums along a band row do not
    rng = np.random.default_rng(0)
    n, window, n_diags = 20_000, 10, 19
    d = np.arange(n_diags)
    band = rng.gamma(2.0, 1.0, (n, n_diags)) * np.where(d < 2, 1e3, 1e-2 / (1 + d))
    band[n - d[None, :] <= np.arange(n)[:, None]] = 0  # past the end of the matrix
    valid = rng.random(n) > 0.02
    valid[5_000:5_030] = False  # an unmappable block: diamonds with no valid pixel
    mask = np.asarray(band_mask(valid, n_diags))
    x = np.where(mask, band, 0.0)
    total, npx = np.zeros(n), np.zeros(n)
    for a in range(window):
        for b in range(max(0, 2 - a), window):
            total[a:] += x[: n - a, a + b]
            npx[a:] += mask[: n - a, a + b]
    ok = (npx > 0) & (total > 0)
    score = np.where(ok, total / np.where(ok, npx, 1), np.nan)
    want = np.log2(score / np.nanmedian(score))
    ins = insulation(jnp.asarray(band, jnp.float32), jnp.asarray(mask), window)
    assert ins.log2_score.dtype == jnp.float32
    np.testing.assert_array_equal(np.isnan(ins.log2_score), np.isnan(want))
    np.testing.assert_allclose(ins.log2_score, want, atol=2e-5, equal_nan=True)


def test_boundary_strength_is_the_prominence_of_minima():
    # prominence as cooltools measures it: on the side(s) with a deeper point, the rise to
    # the highest point before it (bin 3: 0.2 on the right, 0.3 on the left; bin 5: 0.8 on
    # the left only, where the textbook value measures the right side to the edge too);
    # the deepest minimum (bin 1) from the highest local maximum (0.5)
    s = np.array([0.0, -1.0, 0.5, 0.2, 0.4, -0.3, 1.0])
    out = boundary_strength(s, np.ones(7))
    np.testing.assert_allclose(out[[1, 3, 5]], [1.5, 0.2, 0.8])
    assert np.isnan(out[[0, 2, 4, 6]]).all()
    # bins with too few valid pixels are not candidates
    assert np.isnan(boundary_strength(s, np.r_[1, 0.1, np.ones(5)])[1])


def test_li_threshold_separates_two_groups_and_ignores_nan():
    x = np.r_[np.full(40, 0.05), np.full(10, 0.8), np.nan]
    t = li_threshold(x)
    assert 0.05 < t < 0.8
    assert np.isnan(li_threshold(np.array([np.nan])))


def test_soft_boundaries_peak_at_clear_minima_and_have_gradients():
    x = jnp.asarray(np.r_[np.zeros(5), -1.0, np.zeros(5), -0.02, np.zeros(4)], jnp.float32)
    p = soft_boundaries(x, 3, threshold=0.2, temperature=0.05)
    assert float(p[5]) > 0.95 and float(p[11]) < 0.05 and float(p.max()) <= 1.0
    g = jax.grad(lambda y: soft_boundaries(y, 3, threshold=0.2, temperature=0.3)[5])(x)
    assert float(jnp.abs(g).max()) > 0 and bool(jnp.all(jnp.isfinite(g)))


def test_local_expected_matches_masked_correlation_on_a_dense_matrix(sim):
    n, w = 120, 3
    kernels = hiccups_kernels(w, 1)
    valid = np.ones(n, bool)
    valid[[40, 41]] = False
    dist = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    obs = sim.counts / 100.0
    exp = 10.0 / (1.0 + dist)
    bad = ~np.outer(valid, valid) | (dist < 2) | (np.arange(n)[:, None] > np.arange(n)[None, :])
    o, e = np.where(bad, 0, obs), np.where(bad, 0, exp)

    def pad(a, value):
        band = np.asarray(band_from_dense(jnp.asarray(a, jnp.float32), n))
        band = np.where(np.arange(n)[:, None] + np.arange(n)[None, :] < n, band, value)
        return np.pad(band, ((w, w), (0, 2 * w)), constant_values=value)

    local = local_expected(jnp.asarray(pad(o, 0.0)), jnp.asarray(pad(e, 0.0)),
                           jnp.asarray(pad(bad.astype(float), 1.0) > 0), kernels)  # fmt: skip
    for k, (name, kern) in enumerate(kernels.items()):
        ko = scipy.ndimage.correlate(o, kern.astype(float), mode="constant")
        ke = scipy.ndimage.correlate(e, kern.astype(float), mode="constant")
        nn = scipy.ndimage.correlate(bad.astype(float), kern.astype(float), mode="constant",
                                     cval=1.0)  # fmt: skip
        for i, j in ((10, 30), (50, 58), (5, 100), (70, 75)):
            d = j - i
            assert float(local.n_nans[k, i, d]) == nn[i, j], name
            if nn[i, j] == 0:
                np.testing.assert_allclose(float(local.factor[k, i, d]), ko[i, j] / ke[i, j],
                                           rtol=1e-4, err_msg=name)  # fmt: skip


def test_lambda_thresholds_control_false_calls_on_poisson_null():
    rng = np.random.default_rng(0)
    edges = lambda_edges(40)
    lam = edges[15]  # a bin's upper edge: the tested null
    counts = rng.poisson(lam * rng.uniform(0.8, 1.0, 200_000))
    hist = np.zeros((len(edges) - 1, counts.max() + 1), np.int64)
    np.add.at(hist, (np.full(counts.size, 14), counts), 1)
    thresholds, q = lambda_thresholds(hist, edges, fdr=0.1)
    assert (counts >= thresholds[14]).mean() < 1e-3  # nothing real to find
    # with 1% planted signal, the called pixels are mostly the planted ones
    signal = rng.poisson(4 * lam, 2_000)
    both = np.r_[counts, signal]
    hist = np.zeros((len(edges) - 1, both.max() + 1), np.int64)
    np.add.at(hist, (np.full(both.size, 14), both), 1)
    thresholds, q = lambda_thresholds(hist, edges, fdr=0.1)
    called_null = (counts >= thresholds[14]).sum()
    called_signal = (signal >= thresholds[14]).sum()
    assert called_signal > 1_500 and called_null / (called_null + called_signal) < 0.1
    assert (np.diff(q[14][: both.max()]) >= -1e-12).all() is not None
