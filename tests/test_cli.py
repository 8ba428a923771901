import anndata as ad
import numpy as np
import pandas as pd
import pytest

from diffomics.cli import main

from .spatial.simulate import simulate


def test_demo_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pseudo-spots" in printed and "RMSE" in printed
    adata = ad.read_h5ad(out / "seqfish_pseudospots.h5ad")
    props = adata.obsm["proportions"]
    np.testing.assert_allclose(np.asarray(props).sum(1), 1.0, atol=1e-5)
    table = pd.read_csv(out / "proportions.tsv", sep="\t", index_col=0)
    assert table.shape == (adata.n_obs, 8)
    png = (out / "proportions_on_tissue.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert adata.uns["provenance"]["dataset_name"] == "seqfish_cortex_zhu2018"
    assert not list(out.glob(".*"))  # no temporary files left behind
    svg = pd.read_csv(out / "mob_spatial_genes.tsv", sep="\t", index_col=0)
    assert svg["is_spatial"].sum() > 67 and svg.index[0] in {"Cpe", "Fabp7", "Cck"}
    assert (out / "mob_spatial_genes_on_tissue.png").stat().st_size > 10_000
    assert "published HiCCUPS loops" in printed
    loops = pd.read_csv(out / "gm12878_chr20.loops.bedpe", sep="\t", header=None)
    assert len(loops) > 50 and (loops[0] == "chr20").all()
    bed = pd.read_csv(out / "gm12878_chr20.boundaries.bed", sep="\t", header=None)
    assert len(bed) > 100
    assert (out / "gm12878_chr20.tracks.png").stat().st_size > 10_000
    assert "FOSCTTM" in printed and (out / "snareseq_latent.png").stat().st_size > 10_000
    latent = pd.read_csv(out / "snareseq_latent.tsv", sep="\t", index_col=0)
    assert latent.shape == (1047, 11)


def test_deconvolve_command(tmp_path, capsys):
    spatial, reference = simulate(n_spots=40, n_genes=30, seed=0)
    spatial.obsm["proportions_true"] = spatial.obsm["proportions_true"].copy()
    spatial.write_h5ad(tmp_path / "spots.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    code = main(
        [
            "deconvolve",
            str(tmp_path / "spots.h5ad"),
            str(tmp_path / "ref.h5ad"),
            "--labels",
            "cell_type",
            "--likelihood",
            "poisson",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    assert (tmp_path / "o" / "spots.deconvolved.h5ad").is_file()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deconvolve", "missing.h5ad", "ref.h5ad", "--labels", "t"], "no such file"),
        (["deconvolve", "{spots}", "{spots}", "--labels", "nope"], "nope"),
        (["hic", "{spots}"], "not a cooler"),
        (["hic", "missing.cool"], "no such file"),
        (["hic", "{hic}", "--region", "chrX"], "chrX"),
        (["hic", "{hic}", "--windows", "12345"], "multiples of the resolution"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, args, message):
    spatial, _ = simulate(n_spots=10, n_genes=10, seed=0)
    spatial.write_h5ad(tmp_path / "spots.h5ad")
    from diffomics.datasets import gm12878_hic

    args = [a.format(spots=tmp_path / "spots.h5ad", hic=gm12878_hic("chr22")) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_spatial_genes_command(tmp_path, capsys):
    from .spatial.test_spatial_genes import simulate_counts

    adata = simulate_counts(n_spots=120, n_spatial=3, n_null=20, seed=1)
    adata.write_h5ad(tmp_path / "tissue.h5ad")
    assert main(["spatial-genes", str(tmp_path / "tissue.h5ad"), "--out", str(tmp_path / "o")]) == 0
    table = pd.read_csv(tmp_path / "o" / "spatial_genes.tsv", sep="\t", index_col=0)
    assert {"fsv", "pval", "qval", "is_spatial"} <= set(table.columns)
    assert (tmp_path / "o" / "spatial_genes_on_tissue.png").is_file()
    assert "spatially variable" in capsys.readouterr().out


def test_hic_command(tmp_path, capsys):
    from diffomics.datasets import gm12878_annotations, gm12878_hic

    ctcf = gm12878_annotations()["ctcf"]
    ctcf.iloc[:, :3].to_csv(tmp_path / "ctcf.bed", sep="\t", header=False, index=False)
    out = tmp_path / "o"
    args = ["hic", gm12878_hic("chr22"), "--phasing-track", str(tmp_path / "ctcf.bed")]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1027 bins of 50 kb" in printed and "boundaries" in printed
    comp = pd.read_csv(out / "GM12878_chr22_50kb_prim.chr22.compartments.tsv", sep="\t")
    density = pd.read_csv(tmp_path / "ctcf.bed", sep="\t", header=None)
    assert comp["E1"].notna().sum() > 500
    assert {"E1", "E2", "E3"} <= set(comp.columns) and len(density) > 1000
    bed = pd.read_csv(out / "GM12878_chr22_50kb_prim.chr22.boundaries.bed", sep="\t",
                      header=None)  # fmt: skip
    assert set(bed[3]) == {"boundary_150000", "boundary_250000", "boundary_500000"}
    assert (out / "GM12878_chr22_50kb_prim.chr22.tracks.svg").is_file()
    assert not list(out.glob(".*"))
