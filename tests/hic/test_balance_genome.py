"""Balancing a map of several chromosomes: cooler's three modes, reproduced on a real genome."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from diffomics.core import MissingKeyError, ShapeError
from diffomics.core._errors import ConfigError
from diffomics.hic import analyze, ice, ice_balance, ice_filters, read_cool

DATA = Path(__file__).parents[1] / "data" / "hic"
COOL = DATA / "CN.mm9.10000kb.cool"  # 22 chromosomes, 278 bins of 10 Mb
CHROMS = [f"chr{k}" for k in range(1, 20)] + ["chrX", "chrY", "chrM"]


@pytest.fixture(scope="module")
def genome():
    return read_cool(COOL, region=CHROMS)


@pytest.fixture(scope="module")
def reference():
    # cooler 0.11.0 balance_cooler, tests/_scripts/hic_cooler_genome_reference.py
    return pd.read_csv(DATA / "cooler_cn_mm9_10mb_weights.tsv.gz", sep="\t")


def test_read_cool_of_several_chromosomes_keeps_trans_pixels(genome):
    assert genome.n_bins == 278 and genome.chroms == CHROMS
    ids = genome.chrom_ids
    assert (ids[genome.bin1] != ids[genome.bin2]).sum() > 10_000  # trans pixels
    assert np.all(genome.bin1 <= genome.bin2)
    one = read_cool(COOL, region="chr5")
    lo = int(np.flatnonzero(ids == 4)[0])
    cis = (ids[genome.bin1] == 4) & (ids[genome.bin2] == 4)
    np.testing.assert_array_equal(genome.bin1[cis] - lo, one.bin1)
    np.testing.assert_array_equal(genome.count[cis], one.count)
    # chromosomes come in file order whatever order they are asked in
    assert read_cool(COOL, region=["chr2", "chr1"]).chroms == ["chr1", "chr2"]


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [("cis_only", {"cis_only": True}), ("genome", {}), ("trans_only", {"trans_only": True})],
)
def test_genome_balancing_matches_cooler(genome, reference, mode, kwargs):
    weights, report = ice_balance(genome, **kwargs)
    theirs = reference[mode].to_numpy()
    np.testing.assert_array_equal(np.isnan(weights), np.isnan(theirs))
    ok = np.isfinite(theirs)
    np.testing.assert_allclose(weights[ok], theirs[ok], rtol=1e-4)
    assert report["ice_converged"] and report["n_masked_bins"] == np.isnan(theirs).sum()


def test_filters_pool_the_mad_cutoff_over_chromosomes(genome, reference):
    # One chromosome at a time the MAD cut-off differs, and so do the masks.
    kept, _ = ice_filters(genome.bin1, genome.bin2, genome.count, genome.n_bins,
                          chrom=genome.chrom_ids, cis_only=True)  # fmt: skip
    per_chrom = np.concatenate(
        [ice_filters(m.bin1, m.bin2, m.count, m.n_bins)[0]
         for m in (read_cool(COOL, region=c) for c in CHROMS)]
    )  # fmt: skip
    np.testing.assert_array_equal(~kept, reference["cis_only"].isna().to_numpy())
    assert (kept != per_chrom).sum() > 0


def test_cis_only_balances_each_chromosome_on_its_own():
    rng = np.random.default_rng(1)
    n = 40
    a = rng.poisson(30, size=(n, n)).astype(np.float64)
    a = np.triu(a + a.T)
    chrom = np.repeat([0, 1, 2], [10, 18, 12])
    i, j = np.nonzero(a)
    valid = np.ones(n, bool)
    valid[[3, 25]] = False
    together = ice(i, j, a[i, j], valid, chrom=chrom, cis_only=True, ignore_diags=1)
    scanned = ice(i, j, a[i, j], valid, chrom=chrom, cis_only=True, ignore_diags=1,
                  differentiable=True)  # fmt: skip
    np.testing.assert_allclose(scanned.weights, together.weights, rtol=1e-6)
    for k in range(3):
        on = chrom == k
        sub = np.triu(a[np.ix_(on, on)])
        si, sj = np.nonzero(sub)
        alone = ice(si, sj, sub[si, sj], valid[on], ignore_diags=1)
        np.testing.assert_allclose(together.weights[on], alone.weights, rtol=1e-5)
    # genome-wide balancing uses the trans contacts, so it differs
    genome_wide = ice(i, j, a[i, j], valid, chrom=chrom, ignore_diags=1)
    assert float(jnp.max(jnp.abs(genome_wide.weights / jnp.where(valid, together.weights, 1)
                                 - 1))) > 0.01  # fmt: skip


def test_genome_balancing_errors(genome):
    with pytest.raises(ConfigError, match="cis_only"):
        ice_balance(genome, cis_only=True, trans_only=True)
    with pytest.raises(ConfigError, match="trans_only"):
        ice_balance(read_cool(COOL, region="chr1"), trans_only=True)
    with pytest.raises(MissingKeyError, match="chr99"):
        read_cool(COOL, region=["chr1", "chr99"])


# --- analysing several chromosomes in one call ----------------------------------------------

WINDOW = 30_000_000


@pytest.fixture(scope="module")
def several():
    return analyze(COOL, region=CHROMS, windows=(WINDOW,), loops=False, progress=False)


def test_several_chromosomes_are_balanced_as_cooler_cis_only(several, reference):
    theirs = reference["cis_only"].to_numpy()
    np.testing.assert_array_equal(np.isnan(several.weights), np.isnan(theirs))
    ok = np.isfinite(theirs)
    np.testing.assert_allclose(several.weights[ok], theirs[ok], rtol=1e-4)
    assert several.report["ice_converged"] and list(several.regions) == CHROMS


def test_each_chromosome_is_analysed_as_on_its_own(several):
    # the stacked tables are the regions' tables, and each equals a call on that chromosome
    # with the same weights
    for name in ("expected", "insulation", "compartments", "boundaries"):
        parts = [getattr(r, name) for r in several.regions.values()]
        pd.testing.assert_frame_equal(getattr(several, name),
                                      pd.concat(parts, ignore_index=True))  # fmt: skip
    assert several.expected["region1"].unique().tolist() == CHROMS
    for chrom in ("chr1", "chr11", "chrX"):
        part = several.regions[chrom]
        alone = analyze(COOL, region=chrom, balance=part.weights, windows=(WINDOW,),
                        loops=False, progress=False)  # fmt: skip
        for name in ("expected", "insulation", "compartments", "eigvals"):
            pd.testing.assert_frame_equal(getattr(part, name), getattr(alone, name))
    # chromosomes of at most 5 valid bins (ignore_diags + 3) get NaN eigenvectors, as in
    # cooltools' cis_eig: at 10 Mb, chr15..chr19 (7-11 bins, none with 10 cis pixels), chrY
    # and chrM are masked whole
    n_valid = {c: int(np.isfinite(r.weights).sum()) for c, r in several.regions.items()}
    eigvals = several.eigvals.set_index("region")
    for chrom, n in n_valid.items():
        assert eigvals.loc[chrom].notna().all() == (n > 5), (chrom, n)
    assert sum(n == 0 for n in n_valid.values()) == 7


def test_a_map_of_several_chromosomes_is_analysed_as_the_list(several, genome):
    # the genome map holds trans pixels too: they are not used (cis only)
    from_map = analyze(genome, windows=(WINDOW,), loops=False, progress=False)
    for name in ("expected", "insulation", "compartments", "eigvals"):
        pd.testing.assert_frame_equal(getattr(from_map, name), getattr(several, name))


def test_several_regions_errors(genome):
    with pytest.raises(ConfigError, match="different chromosomes"):
        analyze(COOL, region=["chr1", "chr1:0-50,000,000"])
    with pytest.raises(ConfigError, match="needs a .cool path"):
        analyze(genome, region=["chr1", "chr2"])
    with pytest.raises(MissingKeyError, match="chr99"):
        analyze(COOL, region=["chr1", "chr99"])
    with pytest.raises(ShapeError, match="balance weights"):
        analyze(COOL, region=["chr1", "chr2"], balance=np.ones(5))


def test_a_figure_draws_one_region_at_a_time(several):
    from diffomics.plotting import hic_tracks

    with pytest.raises(ConfigError, match=r"result.regions\['chr1'\]"):
        hic_tracks(several)
    fig = hic_tracks(several.regions["chr1"], window=WINDOW)
    assert len(fig.axes) >= 3
