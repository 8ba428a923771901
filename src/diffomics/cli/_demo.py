"""``diffomics demo``: the four analyses on the real datasets bundled with the package.

1. Deconvolution of seqFISH cortex pseudo-spots (Zhu et al. 2018) with the Tasic 2016
   scRNA-seq reference, scored against the cell counts pooled into each spot.
2. Spatially variable genes of the mouse olfactory bulb (Stahl et al. 2016), as SpatialDE.
3. Hi-C of GM12878 chr20 at 25 kb (Rao et al. 2014), against the published Arrowhead domains
   and HiCCUPS loops.
4. Integration of SNARE-seq RNA + ATAC features of four cell lines (Chen et al. 2019).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from diffomics.cli._commands import (
    _composition,
    _fit_text,
    _top_genes,
    deconvolution_outputs,
    hic_outputs,
    hic_section,
    integration_metrics,
    integration_outputs,
    spatial_genes_outputs,
)
from diffomics.cli._io import atomic
from diffomics.cli._report import Section

__all__ = ["run_demo"]

STEPS = 4


def _step(i: int, text: str) -> float:
    print(f"[{i}/{STEPS}] {text}", flush=True)
    return time.perf_counter()


def demo_deconvolution(out: Path, *, spot_size: float, seed: int) -> Section:
    """Deconvolve seqFISH pseudo-spots and score them against the pooled cell types."""
    from diffomics.sources import SeqFISHSource
    from diffomics.spatial import deconvolve, pool_pseudo_spots, proportion_metrics

    start = _step(1, "deconvolution of seqFISH cortex pseudo-spots")
    source = SeqFISHSource()
    cells, reference = source.spatial, source.reference
    spots = pool_pseudo_spots(cells, "cell_type", spot_size=spot_size)
    spots.uns["provenance"] = source.load()["dataset_provenance"]
    result = deconvolve(
        spots, reference, "cell_type", likelihood="gaussian", seed=seed, progress=None
    )
    truth = spots.obsm["proportions_true"]
    floor_frame = truth * 0.0 + reference.obs["cell_type"].value_counts(normalize=True)
    metrics = {
        "diffomics": proportion_metrics(truth, result.proportions),
        "floor (reference composition everywhere)": proportion_metrics(
            truth, floor_frame.fillna(0.0)
        ),
    }
    written, figures = deconvolution_outputs(spots, result, out, "seqfish_pseudospots")
    written.append(
        atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    )
    table = pd.DataFrame(metrics).T.rename(
        columns={"rmse": "RMSE", "jsd": "JSD", "pearson_spot": "Pearson per spot",
                 "pearson_type": "Pearson per type", "n_types_scored": "types scored"}
    )
    ours = metrics["diffomics"]
    summary = (
        f"seqFISH mouse cortex (Zhu et al. 2018): {cells.n_obs} imaged cells pooled into "
        f"{spots.n_obs} pseudo-spots of {spots.obs['n_cells'].mean():.1f} cells on average "
        f"(grid side {spot_size:g}), deconvolved with the {reference.n_obs} Tasic et al. "
        "(2016) scRNA-seq cells as reference. The values are the authors' normalised 0-101 "
        f"scale, not counts, so the likelihood is Gaussian. Fit: {_fit_text(result.fit)}."
        "\n\nThe truth is the cell types pooled into each spot: RMSE "
        f"{ours['rmse']:.4f}, Jensen-Shannon divergence {ours['jsd']:.4f}, Pearson per type "
        f"{ours['pearson_type']:.3f}."
    )
    print("  " + summary.replace("\n\n", "\n  "))
    return Section(
        "Spatial deconvolution: seqFISH cortex",
        summary,
        tables=[
            ("Proportions against the pooled truth", table),
            ("Estimated composition", _composition(result)),
        ],
        figures=figures,
        files=written,
        seconds=time.perf_counter() - start,
    )


def demo_spatial_genes(out: Path) -> Section:
    """Spatially variable genes of the bundled mouse olfactory bulb, as SpatialDE's paper."""
    from diffomics.datasets import mouse_olfactory_bulb
    from diffomics.spatial import spatial_genes

    start = _step(2, "spatially variable genes of the mouse olfactory bulb")
    mob = mouse_olfactory_bulb()
    mob = mob[:, np.asarray(mob.X.sum(axis=0)).ravel() >= 3].copy()
    table = spatial_genes(mob, total_counts_key="total_counts", progress=None)
    written, figures = spatial_genes_outputs(mob, table, out, "mob_spatial_genes")
    summary = (
        f"Mouse olfactory bulb, Spatial Transcriptomics replicate 11 (Stahl et al. 2016), the "
        f"data of SpatialDE's paper: {mob.n_vars} genes with 3 or more counts over "
        f"{mob.n_obs} spots. Counts variance-stabilised with the log total counts regressed "
        "out, then SpatialDE's Gaussian-process likelihood ratio over its grid of "
        "lengthscales, with p-values from a permutation null and Benjamini-Hochberg q-values: "
        f"{int(table['is_spatial'].sum())} spatially variable at q < 0.05."
    )
    print("  " + summary)
    return Section(
        "Spatially variable genes: mouse olfactory bulb",
        summary,
        tables=[("Strongest genes", _top_genes(table))],
        figures=figures,
        files=written,
        seconds=time.perf_counter() - start,
    )


def demo_hic(out: Path) -> Section:
    """The bundled GM12878 chr20 map at 25 kb, against the published calls."""
    from diffomics.datasets import gm12878_annotations, gm12878_hic
    from diffomics.hic import analyze, count_features, read_cool

    start = _step(3, "Hi-C of GM12878 chr20 at 25 kb")
    published = gm12878_annotations()
    ctcf = published["ctcf"].assign(summit_pos=lambda t: t["start"] + t["summit"])
    cmap = read_cool(gm12878_hic("chr20"))
    track = count_features(ctcf, cmap.bins, position="summit_pos")
    result = analyze(cmap, phasing_track=track)
    res = cmap.resolution
    loops = published["loops"].query("chrom1 == 'chr20'")
    truth = np.c_[loops["x1"] // res, loops["y1"] // res]
    ours = result.loops[["bin1_id", "bin2_id"]].to_numpy()
    hit = [bool(np.any(np.abs(ours - t).max(1) <= 1)) for t in truth] if len(ours) else [False]
    domains = published["domains"].query("chrom == 'chr20'")
    ends = np.unique(np.r_[domains["start"], domains["end"]] // res)
    w = sorted(result.boundaries["window"].unique())[1]
    called = result.boundaries.query("window == @w")["start"].to_numpy() // res
    near = [bool(np.abs(ends - c).min() <= 1) for c in called]
    e1 = result.compartments["E1"].to_numpy()
    ok = np.isfinite(e1)
    rho = np.corrcoef(e1[ok], track["count"].to_numpy()[ok])[0, 1]
    written, figures = hic_outputs(result, out, "gm12878_chr20")
    extra = (
        f"E1 is phased by CTCF-peak density (Pearson {rho:.2f}). {np.mean(near):.0%} of the "
        f"{len(called)} boundaries at {w // 1000} kb are within 1 bin of a published Arrowhead "
        f"domain end; {np.mean(hit):.0%} of the {len(truth)} published HiCCUPS loops are "
        "within 1 bin of a called loop."
    )
    what = "GM12878 in situ Hi-C (Rao et al. 2014), primary MAPQ >= 30 contacts,"
    section = hic_section(
        result, written, figures, what=what, seconds=time.perf_counter() - start, extra=extra
    )
    section.title = "Hi-C: GM12878 chr20"
    print("  " + section.summary)
    return section


def demo_integration(out: Path, *, seed: int) -> Section:
    """Integrate the bundled SNARE-seq RNA + ATAC features (four cell lines)."""
    from diffomics.datasets import snareseq_celllines
    from diffomics.integration import integrate

    start = _step(4, "integration of SNARE-seq RNA + ATAC")
    data = snareseq_celllines()
    model = integrate(
        data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, seed=seed, progress=False
    )
    labels = data["rna"].obs["cell_line"].reindex(model.cells).astype(str).to_numpy()
    metrics = integration_metrics(model, data, labels)
    written, figures = integration_outputs(
        model, data, labels, out, "snareseq", title="SNARE-seq joint latent (diffomics)"
    )
    rep = model.report
    knn = metrics.loc["15-NN label accuracy (joint latent)", "value"]
    summary = (
        f"SNARE-seq (Chen et al. 2019), {len(model.cells)} cells of four cell lines with RNA "
        "and chromatin accessibility from the same cell, as the real-valued features of SCOT "
        "(Demetci et al. 2022), so Gaussian likelihoods: a product-of-experts VAE with a "
        f"10-dimensional latent, {rep['epochs']} epochs ({rep['seconds_per_epoch']:.2f} s "
        f"each). FOSCTTM {metrics['value'].iloc[0]:.3f} between the RNA-only and ATAC-only "
        "latents (0 = every cell's partner is its nearest neighbour, 0.5 = random); "
        f"cell-line 15-NN accuracy {knn:.3f}."
    )
    print("  " + summary)
    return Section(
        "Integration: SNARE-seq RNA + ATAC",
        summary,
        tables=[("Integration metrics", metrics)],
        figures=figures,
        files=written,
        seconds=time.perf_counter() - start,
    )


def run_demo(args: argparse.Namespace) -> list[Section]:
    """All four analyses on the bundled data; the sections of ``report.html``."""
    out = Path(args.out)
    return [
        demo_deconvolution(out, spot_size=args.spot_size, seed=args.seed),
        demo_spatial_genes(out),
        demo_hic(out),
        demo_integration(out, seed=args.seed),
    ]
