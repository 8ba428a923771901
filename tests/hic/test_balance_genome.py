"""Balancing a map of several chromosomes: cooler's three modes, reproduced on a real genome."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from diffomics.core import MissingKeyError
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
    with pytest.raises(ConfigError, match="one chromosome"):
        analyze(genome)
