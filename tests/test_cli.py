import json
import os
import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from diffomics.cli import main

from .spatial.simulate import simulate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run ``diffomics demo`` once; its folder and what it printed."""
    out = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["demo", "--out", str(out)]) == 0
    return out, buffer.getvalue()


def test_demo_writes_its_outputs(demo):
    out, printed = demo
    assert "pseudo-spots" in printed and "RMSE" in printed and "[4/4]" in printed
    adata = ad.read_h5ad(out / "seqfish_pseudospots.h5ad")
    props = adata.obsm["proportions"]
    np.testing.assert_allclose(np.asarray(props).sum(1), 1.0, atol=1e-5)
    table = pd.read_csv(out / "seqfish_pseudospots.proportions.tsv", sep="\t", index_col=0)
    assert table.shape == (adata.n_obs, 8)
    png = (out / "seqfish_pseudospots.proportions_on_tissue.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert adata.uns["provenance"]["dataset_name"] == "seqfish_cortex_zhu2018"
    assert not list(out.glob(".*"))  # no temporary files left behind
    svg = pd.read_csv(out / "mob_spatial_genes.tsv", sep="\t", index_col=0)
    assert svg["is_spatial"].sum() > 67 and svg.index[0] in {"Cpe", "Fabp7", "Cck"}
    assert (out / "mob_spatial_genes_on_tissue.svg").stat().st_size > 10_000
    assert "published HiCCUPS loops" in printed
    loops = pd.read_csv(out / "gm12878_chr20.loops.bedpe", sep="\t", header=None)
    assert len(loops) > 50 and (loops[0] == "chr20").all()
    bed = pd.read_csv(out / "gm12878_chr20.boundaries.bed", sep="\t", header=None)
    assert len(bed) > 100
    assert (out / "gm12878_chr20.tracks.png").stat().st_size > 10_000
    assert "FOSCTTM" in printed and (out / "snareseq.latent.png").stat().st_size > 10_000
    latent = pd.read_csv(out / "snareseq.latent.tsv", sep="\t", index_col=0)
    assert latent.shape == (1047, 11) and set(latent["label"]) == {"BJ", "GM", "H1", "K562"}
    assert ad.read_h5ad(out / "snareseq.rna.h5ad").obsm["X_diffomics"].shape == (1047, 10)
    assert (out / "snareseq.model" / "state.npz").is_file()
    assert (out / "report.html").stat().st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_demo_report_content(demo):
    out, _ = demo
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert len(headings) == 4
    for heading, title in zip(
        headings, ["seqFISH cortex", "mouse olfactory bulb", "GM12878 chr20", "SNARE-seq"],
        strict=True,
    ):
        assert title in heading
    assert page.count("data:image/png;base64,") == 4
    assert page.count("<table") >= 6
    for link in re.findall(r'href="([^"#]+)"', page):  # every written file it links exists
        assert (out / link).exists(), link


def _browser():
    """Debian's chromium driven by playwright, or a skip (a failure where CI requires it)."""
    required = os.environ.get("DIFFOMICS_REQUIRE_BROWSER") == "1"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium is None or sync_playwright is None:
        reason = "no chromium on PATH" if chromium is None else "playwright not installed"
        if required:
            pytest.fail(f"DIFFOMICS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"{reason}: the report is not loaded in a browser")
    return sync_playwright, chromium


def test_demo_report_in_headless_browser(demo):
    sync_playwright, chromium = _browser()
    out, _ = demo
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri(), wait_until="load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth, "
            "i.getBoundingClientRect().width])"
        )
        headings = page.locator("h2").all_inner_texts()
        rows = page.locator("table tr").count()
        shot = page.screenshot(full_page=True)
        browser.close()
    assert problems == []
    assert len(images) == 4 and all(ok and w > 300 and shown > 300 for ok, w, shown in images)
    assert len(headings) == 4 and rows > 30
    assert all(url.startswith(("file:", "data:")) for url in requests)  # nothing from a network
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 100_000


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
    assert (tmp_path / "o" / "spots.deconvolved.proportions.tsv").is_file()
    assert "Spatial deconvolution" in (tmp_path / "o" / "report.html").read_text()
    assert "wrote" in capsys.readouterr().out


def test_deconvolve_command_reads_spots_from_a_file_a_chunk_at_a_time(tmp_path):
    # --backed .h5ad and a Zarr store, fitted in chunks of 16 spots: the proportions of the
    # same chunked fit in memory; the .h5ad written holds the results, not X
    spatial, reference = simulate(n_spots=40, n_genes=30, seed=0)
    spatial.write_h5ad(tmp_path / "spots.h5ad")
    spatial.write_zarr(tmp_path / "spots.zarr")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    common = [str(tmp_path / "ref.h5ad"), "--labels", "cell_type", "--likelihood", "poisson",
              "--chunk-size", "16"]  # fmt: skip
    tables = {}
    for kind, spots in (("memory", ["spots.h5ad"]), ("backed", ["spots.h5ad", "--backed"]),
                        ("zarr", ["spots.zarr"])):  # fmt: skip
        out = tmp_path / kind
        argv = ["deconvolve", str(tmp_path / spots[0]), *common, *spots[1:], "--out", str(out)]
        assert main(argv) == 0
        stem = Path(spots[0]).stem
        tables[kind] = pd.read_csv(out / f"{stem}.deconvolved.proportions.tsv", sep="\t",
                                   index_col=0)  # fmt: skip
        written = ad.read_h5ad(out / f"{stem}.deconvolved.h5ad")
        assert written.uns["proportions"]["params"]["n_chunks"] == 3
        assert (written.X is None) == (kind != "memory")
    pd.testing.assert_frame_equal(tables["backed"], tables["memory"])
    pd.testing.assert_frame_equal(tables["zarr"], tables["memory"])


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
    table = pd.read_csv(tmp_path / "o" / "tissue.spatial_genes.tsv", sep="\t", index_col=0)
    assert {"fsv", "pval", "qval", "is_spatial"} <= set(table.columns)
    assert (tmp_path / "o" / "tissue.spatial_genes_on_tissue.png").is_file()
    assert (tmp_path / "o" / "report.html").is_file()
    assert "spatially variable" in capsys.readouterr().out


def test_spatial_genes_command_reads_a_file_in_chunks_of_genes(tmp_path):
    # --backed .h5ad and a Zarr store: the table of the file read into memory; the .h5ad
    # written holds the results, not X
    from .spatial.test_spatial_genes import simulate_counts

    adata = simulate_counts(n_spots=80, n_spatial=2, n_null=10, seed=2)
    adata.write_h5ad(tmp_path / "tissue.h5ad")
    adata.write_zarr(tmp_path / "tissue.zarr")
    tables = {}
    for kind, data in (("memory", ["tissue.h5ad"]), ("backed", ["tissue.h5ad", "--backed"]),
                       ("zarr", ["tissue.zarr"])):  # fmt: skip
        out = tmp_path / kind
        assert main(["spatial-genes", str(tmp_path / data[0]), *data[1:], "--out", str(out)]) == 0
        tables[kind] = pd.read_csv(out / "tissue.spatial_genes.tsv", sep="\t", index_col=0)
        written = ad.read_h5ad(out / "tissue.spatial_genes.h5ad")
        assert (written.X is None) == (kind != "memory") and "pval" in written.var
    pd.testing.assert_frame_equal(tables["backed"], tables["memory"])
    pd.testing.assert_frame_equal(tables["zarr"], tables["memory"])


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


def test_hic_command_on_several_chromosomes(tmp_path, capsys):
    cool = Path(__file__).parent / "data" / "hic" / "CN.mm9.10000kb.cool"
    out = tmp_path / "o"
    args = ["hic", str(cool), "--region", "chr1,chr2,chrX", "--windows", "30000000"]
    assert main([*args, "--no-loops", "--out", str(out)]) == 0
    assert "56 bins of 10000 kb, 2 masked" in capsys.readouterr().out  # 20 + 19 + 17 bins
    comp = pd.read_csv(out / "CN.mm9.10000kb.chr1-chrX.compartments.tsv", sep="\t")
    assert comp["chrom"].unique().tolist() == ["chr1", "chr2", "chrX"]
    assert (out / "CN.mm9.10000kb.chr1-chrX.tracks.svg").is_file()


def _write_h5mu(path, mods):

    """A MuData file as mudata writes it (modalities under /mod), without needing mudata."""
    import anndata.io
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "MuData"
        f.attrs["encoding-version"] = "0.1.0"
        group = f.create_group("mod")
        for name, adata in mods.items():
            anndata.io.write_elem(group, name, adata)
        group.attrs["mod-order"] = list(mods)


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """SNARE-seq RNA and ATAC, 300 cells, as one .h5mu and as two .h5ad files."""
    from diffomics.datasets import snareseq_celllines

    data = {k: v[:300].copy() for k, v in snareseq_celllines().items()}
    folder = tmp_path_factory.mktemp("paired")
    _write_h5mu(folder / "snare.h5mu", data)
    for name, adata in data.items():
        adata.write_h5ad(folder / f"cells_{name}.h5ad")
    return folder


def test_integrate_command_h5mu(paired, capsys):
    out = paired / "o"
    args = ["integrate", str(paired / "snare.h5mu"), "--likelihood", "rna=gaussian,atac=gaussian",
            "--labels", "cell_line", "--max-epochs", "15", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "300 cells" in printed and "report.html" in printed
    latent = pd.read_csv(out / "snare.integrated.latent.tsv", sep="\t", index_col=0)
    assert latent.shape == (300, 11)
    rna = ad.read_h5ad(out / "snare.integrated.rna.h5ad")
    np.testing.assert_allclose(rna.obsm["X_diffomics"], latent.iloc[:, :10], atol=1e-4)
    page = (out / "report.html").read_text()
    assert "FOSCTTM rna vs atac" in page and "15-NN label accuracy" in page


def test_integrate_command_streams_backed_and_zarr_input(paired):
    # --backed h5ad and a Zarr store: the same latent as in memory (bitwise the same
    # training); the .h5ad written for a streamed modality has its annotations, not its X
    paired_zarr = paired / "cells_atac.zarr"
    ad.read_h5ad(paired / "cells_atac.h5ad").write_zarr(paired_zarr)
    common = ["--likelihood", "rna=gaussian,atac=gaussian", "--max-epochs", "3"]
    runs = {}
    for kind, data in (("memory", [f"atac={paired / 'cells_atac.h5ad'}"]),
                       ("streamed", [f"atac={paired_zarr}", "--backed"])):  # fmt: skip
        out = paired / f"o_{kind}"
        argv = ["integrate", f"rna={paired / 'cells_rna.h5ad'}", *data, *common, "--out", str(out)]
        assert main(argv) == 0
        runs[kind] = out
    latent = {k: pd.read_csv(o / "rna_atac.integrated.latent.tsv", sep="\t", index_col=0)
              for k, o in runs.items()}  # fmt: skip
    pd.testing.assert_frame_equal(latent["streamed"], latent["memory"])
    written = ad.read_h5ad(runs["streamed"] / "rna_atac.integrated.atac.h5ad")
    assert written.X is None and written.n_vars == 19
    np.testing.assert_allclose(written.obsm["X_diffomics"], latent["memory"].iloc[:, :10],
                               atol=1e-4)  # fmt: skip


def test_h5ad_modalities_are_named_by_argument_or_stem(paired):
    from diffomics.cli._io import read_modalities

    mods, stem = read_modalities([f"expr={paired / 'cells_rna.h5ad'}",
                                  str(paired / "cells_atac.h5ad")])  # fmt: skip
    assert list(mods) == ["expr", "cells_atac"] and stem == "expr_cells_atac"
    assert mods["expr"].n_obs == 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{rna}"], "two or more modalities"),
        (["{h5mu}", "--labels", "nope"], "no column 'nope'"),
        (["{h5mu}", "--likelihood", "rna"], "NAME=LIKELIHOOD"),
        (["{h5mu}", "--likelihood", "rna=wrong"], "wrong"),
        (["{rna}", "{rna}"], "given twice"),
        (["{h5mu}", "{rna}"], "one .h5mu file alone"),
        (["{h5mu}", "--backed"], "--backed streams .h5ad files and Zarr stores"),
        (["missing.h5mu"], "no such file"),
    ],
)
def test_integrate_user_errors_are_one_line(paired, capsys, args, message):
    names = {"rna": paired / "cells_rna.h5ad", "h5mu": paired / "snare.h5mu"}
    argv = ["integrate", *[a.format(**names) for a in args], "--out", str(paired / "bad")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bench_command(tmp_path, capsys):
    assert main(["bench", "--analyses", "deconvolve", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "bench.json").read_text())
    row = payload["results"]["deconvolve"]
    assert row["first call s"] > 0 and row["second call s"] > 0
    assert "| deconvolve |" in (tmp_path / "bench.md").read_text()
    assert main(["bench", "--analyses", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown ['nope']" in capsys.readouterr().err
