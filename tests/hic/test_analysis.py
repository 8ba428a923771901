"""`diffomics.hic.analyze`: planted structure recovered, cooltools reproduced on real maps,
file input and bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from diffomics.core import CountsError, DataIntegrityError, MissingKeyError, ShapeError
from diffomics.core._errors import ConfigError, NonFiniteError
from diffomics.datasets import gm12878_hic
from diffomics.hic import analyze, from_dense, read_cool
from tests.hic.simulate import simulate_map

DATA = Path(__file__).parents[1] / "data" / "hic"


def _near(a, b, tol=1):
    """Fraction of the (i, j) in `a` with a partner in `b` within `tol` bins."""
    b = np.asarray(list(b)).reshape(-1, 2)
    return np.mean([np.any(np.abs(b - np.asarray(x)).max(1) <= tol) for x in a]) if len(a) else 0


@pytest.fixture(scope="module")
def planted():
    sim = simulate_map()
    return sim, analyze(sim.counts, resolution=10_000, windows=[50_000],
                        phasing_track=sim.compartment)  # fmt: skip


def test_planted_compartments_are_recovered_and_phased(planted):
    sim, res = planted
    e1 = res.compartments["E1"].to_numpy()
    ok = np.isfinite(e1)
    assert not ok[list(sim.empty)].any()
    assert np.corrcoef(e1[ok], sim.compartment[ok])[0, 1] > 0.9


def test_planted_tad_boundaries_are_recovered(planted):
    sim, res = planted
    called = res.boundaries["start"].to_numpy() // 10_000
    recall = np.mean([np.abs(called - b).min() <= 1 for b in sim.boundaries])
    assert recall == 1.0
    # extra calls sit at the planted compartment switches (bins 60 and 180), which insulate too
    structural = np.r_[sim.boundaries, 60, 120, 180]
    assert all(np.abs(structural - c).min() <= 1 for c in called)


def test_planted_loops_are_recovered_without_false_calls():
    sim = simulate_map(ab_strength=0.0)
    res = analyze(sim.counts, resolution=10_000, n_eigs=0)
    found = list(zip(res.loops["bin1_id"], res.loops["bin2_id"], strict=True))
    assert _near(sim.loops, found) == 1.0
    assert _near(found, sim.loops) == 1.0
    assert {"chrom1", "start1", "end1", "chrom2", "start2", "end2"} <= set(res.loops.columns)


def test_no_loops_on_a_map_without_loops():
    sim = simulate_map(ab_strength=0.0, tad_boost=1.0, loop_boost=1.0, seed=3)
    assert len(analyze(sim.counts, resolution=10_000, n_eigs=0).loops) == 0


def test_dense_sparse_and_contact_map_inputs_agree(planted):
    sim, res = planted
    sparse = analyze(scipy.sparse.csr_matrix(sim.counts), resolution=10_000, windows=[50_000],
                     phasing_track=sim.compartment)  # fmt: skip
    pd.testing.assert_frame_equal(sparse.insulation, res.insulation)
    pd.testing.assert_frame_equal(sparse.loops, res.loops)


def test_coarsened_compartments_for_large_maps(planted):
    sim, _ = planted
    res = analyze(sim.counts, resolution=10_000, compartment_max_bins=100, loops=False,
                  phasing_track=sim.compartment)  # fmt: skip
    assert res.compartment_resolution == 30_000 and len(res.compartments) == 80
    coarse_truth = sim.compartment[::3]
    e1 = res.compartments["E1"].to_numpy()
    ok = np.isfinite(e1)
    assert np.corrcoef(e1[ok], coarse_truth[ok])[0, 1] > 0.9


def test_a_coarsened_map_that_cannot_be_balanced_is_named_with_the_way_out():
    # a band of 12 diagonals (enough pixels to balance at 10 kb) coarsened 20-fold: every
    # coarse bin has at most 3 non-zero pixels, under ICE's min_nnz of 10
    n = 400
    band = sum(scipy.sparse.eye(n, k=k) for k in range(-11, 12)) * 50.0
    with pytest.raises(CountsError, match=r"compartments: the map coarsened to 200,000 bp.*"
                                          r"n_eigs=0"):  # fmt: skip
        analyze(band.tocsr(), resolution=10_000, compartment_max_bins=20, windows=[30_000],
                loops=False, ignore_diags=1)  # fmt: skip
    res = analyze(band.tocsr(), resolution=10_000, n_eigs=0, windows=[30_000], loops=False,
                  ignore_diags=1)  # fmt: skip
    assert res.compartments is None and np.isfinite(res.weights).sum() > n - 30  # edges masked


# --- agreement with cooler / cooltools on the real GM12878 maps -----------------------------

MAPS = {
    "chr22_50kb": ("chr22", [150_000, 250_000, 500_000]),
    "chr20_25kb": ("chr20", [75_000, 125_000, 250_000, 500_000]),
}


@pytest.fixture(scope="module", params=sorted(MAPS))
def real(request):
    name = request.param
    chrom, windows = MAPS[name]
    track = pd.read_csv(DATA / f"{name}_ctcf_track.tsv.gz", sep="\t")
    res = analyze(gm12878_hic(chrom), windows=windows, phasing_track=track,
                  loops=chrom == "chr20")  # fmt: skip
    ref = {k: pd.read_csv(DATA / f"cooltools_{name}_{k}.tsv.gz", sep="\t")
           for k in ("weights", "expected", "eigs", "insulation")}  # fmt: skip
    return name, windows, res, ref


def _pearson(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return np.corrcoef(a[ok], b[ok])[0, 1], ok.sum()


def test_balancing_matches_cooler(real):
    _, _, res, ref = real
    theirs = ref["weights"]["weight"].to_numpy()
    np.testing.assert_array_equal(np.isnan(res.weights), np.isnan(theirs))
    ok = np.isfinite(theirs)
    np.testing.assert_allclose(res.weights[ok], theirs[ok], rtol=1e-4)


def test_expected_matches_cooltools(real):
    _, _, res, ref = real
    ours, theirs = res.expected, ref["expected"]
    np.testing.assert_array_equal(ours["n_valid"], theirs["n_valid"])
    np.testing.assert_allclose(ours["balanced.avg"], theirs["balanced.avg"], rtol=1e-4)


def test_eigenvectors_match_cooltools(real):
    _, _, res, ref = real
    for k in ("E1", "E2", "E3"):
        r, n = _pearson(res.compartments[k].to_numpy(), ref["eigs"][k].to_numpy())
        assert n > 500 and r > 0.999, k


def test_insulation_and_boundaries_match_cooltools(real):
    _, windows, res, ref = real
    for w in windows:
        r, _ = _pearson(res.insulation[f"log2_insulation_score_{w}"].to_numpy(),
                        ref["insulation"][f"log2_insulation_score_{w}"].to_numpy())  # fmt: skip
        assert r > 0.9999
        # the same boundaries: prominence measured as cooltools measures it, also next to
        # the unmappable blocks (chr22 bin 352 at 250 kb: 0.539, the textbook value 0.106)
        ours = res.insulation[f"is_boundary_{w}"].to_numpy()
        theirs = ref["insulation"][f"is_boundary_{w}"].to_numpy().astype(bool)
        np.testing.assert_array_equal(ours, theirs)
        strength = f"boundary_strength_{w}"
        np.testing.assert_allclose(res.insulation[strength], ref["insulation"][strength],
                                   atol=5e-4)  # fmt: skip


def test_dots_match_cooltools_dots(real):
    name, _, res, _ = real
    if res.loops is None:
        pytest.skip("dots are called at 25 kb only")
    theirs = pd.read_csv(DATA / f"cooltools_{name}_dots.tsv.gz", sep="\t")
    ours = list(zip(res.loops["start1"] // 25_000, res.loops["start2"] // 25_000, strict=True))
    ref = list(zip(theirs["start1"] // 25_000, theirs["start2"] // 25_000, strict=True))
    assert _near(ours, ref, tol=0) > 0.99  # our dots are cooltools dots, pixel for pixel
    assert _near(ref, ours) > 0.9  # and we find nearly all of theirs
    # clustered as cooltools (BIRCH, 20 kb): as few dots within 1 bin of another dot
    dup_ours = sum(_near([x], [y for y in ours if y != x]) for x in ours)
    dup_ref = sum(_near([x], [y for y in ref if y != x]) for x in ref)
    assert dup_ours <= dup_ref + 2


# --- files and bad input --------------------------------------------------------------------


def test_read_cool_region_and_mcool(tmp_path):
    import cooler

    path = gm12878_hic("chr22")
    whole = read_cool(path)
    part = read_cool(path, "chr22:20,000,000-30,000,000")
    assert part.n_bins == 200 and part.bins["start"].iloc[0] == 20_000_000
    assert part.bin1.min() >= 0 and part.bin2.max() < 200 and whole.n_bins == 1027
    mcool = tmp_path / "chr22.mcool"
    cooler.zoomify_cooler(path, str(mcool), [50_000, 100_000], chunksize=10_000_000)
    coarse = read_cool(f"{mcool}::/resolutions/100000")
    assert coarse.resolution == 100_000 and coarse.count.sum() == whole.count.sum()
    with pytest.raises(DataIntegrityError, match="resolutions"):
        read_cool(mcool)


def test_bed_and_bedpe_export(planted, tmp_path):
    _, res = planted
    res.write_bed(tmp_path / "b.bed")
    res.write_bedpe(tmp_path / "l.bedpe")
    bed = pd.read_csv(tmp_path / "b.bed", sep="\t", header=None)
    bedpe = pd.read_csv(tmp_path / "l.bedpe", sep="\t", header=None)
    assert len(bed) == len(res.boundaries) and len(bedpe) == len(res.loops)
    assert (bed[2] - bed[1] == 10_000).all() and (bedpe[4] > bedpe[1]).all()


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        analyze(tmp_path / "missing.cool")
    fake = tmp_path / "fake.cool"
    fake.write_text("not a cooler")
    with pytest.raises(DataIntegrityError, match="not a cooler"):
        analyze(fake)
    with pytest.raises(MissingKeyError, match="chrX"):
        analyze(gm12878_hic("chr22"), region="chrX")
    with pytest.raises(ConfigError, match="region"):
        analyze(gm12878_hic("chr22"), region="chr22:abc")
    with pytest.raises(ConfigError, match="weight column"):
        analyze(gm12878_hic("chr22"), balance="weight")


@pytest.mark.parametrize(
    ("matrix", "error", "match"),
    [
        (np.ones((4, 5)), ShapeError, "square"),
        (np.triu(np.ones((5, 5))), ShapeError, "symmetric"),
        (-np.ones((5, 5)), CountsError, "non-negative"),
        (np.full((5, 5), np.nan), NonFiniteError, "NaN"),
        (np.zeros((5, 5)), CountsError, "no contacts"),
    ],
)
def test_bad_matrices_are_refused(matrix, error, match):
    with pytest.raises(error, match=match):
        from_dense(matrix)


def test_all_zero_rows_are_masked_and_reported(planted):
    sim, res = planted
    assert np.isnan(res.weights[list(sim.empty)]).all()
    assert res.report["n_masked_bins"] >= len(sim.empty)
    assert res.insulation.loc[list(sim.empty), "is_bad_bin"].all()


def test_bad_windows_are_refused(planted):
    sim, _ = planted
    with pytest.raises(ConfigError, match="multiples of the resolution"):
        analyze(sim.counts, resolution=10_000, windows=[15_000])


def test_dots_do_not_depend_on_tiling_and_match_the_dense_operator():
    from flax import nnx

    from diffomics.hic import band_from_pixels, call_dots, expected_cis, from_dense
    from diffomics.operators.multiomics import HiCContactAnalysis, HiCContactAnalysisConfig

    sim = simulate_map(ab_strength=0.0)
    cmap = from_dense(sim.counts, resolution=10_000)
    weights = np.where(np.isin(np.arange(240), sim.empty), np.nan, 1.0)
    exp = expected_cis(cmap.bin1, cmap.bin2, cmap.count, np.nan_to_num(weights)).balanced_avg
    band = np.asarray(band_from_pixels(cmap.bin1, cmap.bin2, cmap.count, 240, 240))
    kwargs = {"resolution": 10_000, "max_distance_bins": 200, "kernel_size": (5, 2),
              "cluster_filtering": False}  # fmt: skip
    whole = call_dots(band, weights, np.asarray(exp), tile_rows=1024, **kwargs)
    tiled = call_dots(band, weights, np.asarray(exp), tile_rows=7, **kwargs)
    pd.testing.assert_frame_equal(whole.reset_index(drop=True), tiled.reset_index(drop=True))
    # the dense operator's loop score is observed / donut local expected, the same quantity
    config = HiCContactAnalysisConfig(resolution=10_000, insulation_window=50_000, balance=False,
                                      distance_decay=False)  # fmt: skip
    scores = np.asarray(HiCContactAnalysis(config, rngs=nnx.Rngs(0)).apply(
        {"contact_matrix": sim.counts}, {}, None)[0]["loop_scores"])  # fmt: skip
    i, j = whole["bin1_id"].to_numpy(), whole["bin2_id"].to_numpy()
    want = whole["count"].to_numpy() / whole["la_exp.donut.value"].to_numpy()
    np.testing.assert_allclose(scores[i, j], want, rtol=1e-4)
