"""The analysis subcommands: read the user's files, run one analysis, write files and a section.

Each ``run_*`` takes the parsed arguments and returns the report `Section` of what it did; it
writes every output atomically under ``args.out``. The analyses live in the library; nothing
here computes a statistic.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from diffomics.cli._io import (
    UserError,
    atomic,
    atomic_folder,
    light_copy,
    read_annotated,
    read_h5ad,
    read_modalities,
    read_track,
    save_figure,
)
from diffomics.cli._report import Section

__all__ = [
    "deconvolution_outputs",
    "hic_outputs",
    "integration_outputs",
    "run_deconvolve",
    "run_hic",
    "run_integrate",
    "run_spatial_genes",
    "spatial_genes_outputs",
]


def _tsv(frame: pd.DataFrame, path: Path, *, index: bool = True) -> Path:
    return atomic(path, lambda p: frame.to_csv(p, sep="\t", index=index, float_format="%.6g"))


# --- deconvolution -------------------------------------------------------------------------


def deconvolution_outputs(spots, result, out: Path, stem: str) -> tuple[list[Path], list]:
    """Write the AnnData, the proportions table and the proportions figure."""
    from diffomics.plotting import proportions_on_tissue

    written = [
        # a streamed file's X stays where it is: the copy holds the annotations and results
        atomic(out / f"{stem}.h5ad", lambda p: light_copy(spots).write_h5ad(p)),
        _tsv(result.proportions, out / f"{stem}.proportions.tsv"),
    ]
    figures = []
    if "spatial" in spots.obsm:
        paths = save_figure(proportions_on_tissue(spots), out / f"{stem}.proportions_on_tissue")
        written += paths
        figures.append(("Estimated proportion of each cell type per spot", paths[0]))
    return written, figures


def _composition(result) -> pd.DataFrame:
    props = result.proportions
    return pd.DataFrame(
        {
            "mean proportion": props.mean(),
            "spots where dominant": props.idxmax(axis=1).value_counts().reindex(props.columns),
        }
    ).fillna(0).sort_values("mean proportion", ascending=False)  # fmt: skip


def _fit_text(fit) -> str:
    return (
        f"{fit.n_steps} optimisation steps, {fit.fit_seconds:.1f} s "
        f"(+{fit.compile_seconds:.1f} s JIT compilation)"
    )


def run_deconvolve(args: argparse.Namespace) -> Section:
    """``diffomics deconvolve SPATIAL.h5ad REFERENCE.h5ad --labels KEY``."""
    from diffomics.spatial import deconvolve

    start = time.perf_counter()
    spatial = read_annotated(args.spatial, backed=args.backed)
    reference = read_h5ad(args.reference)
    result = deconvolve(
        spatial,
        reference,
        args.labels,
        likelihood=args.likelihood,
        mode=args.mode,
        spatial_prior=args.spatial_prior,
        seed=args.seed,
        progress=None,
        checkpoint=args.checkpoint,
        chunk_size=args.chunk_size,
    )
    stem = Path(args.spatial).stem + ".deconvolved"
    written, figures = deconvolution_outputs(spatial, result, Path(args.out), stem)
    n_types = result.proportions.shape[1]
    summary = (
        f"Cell-type proportions of {spatial.n_obs} spots of {args.spatial} from the "
        f"{reference.n_obs} labelled cells of {args.reference} (obs[{args.labels!r}], "
        f"{n_types} types) over {result.genes['n_shared']} shared genes, {args.likelihood} "
        f"likelihood, {args.mode} fit: {_fit_text(result.fit)}."
    )
    print(summary)
    return Section(
        "Spatial deconvolution",
        summary,
        tables=[("Estimated composition", _composition(result))],
        figures=figures,
        files=written,
        seconds=time.perf_counter() - start,
    )


# --- spatially variable genes --------------------------------------------------------------


def spatial_genes_outputs(adata, table: pd.DataFrame, out: Path, stem: str):
    """Write the AnnData, the table of tests and the figure of the strongest genes."""
    from diffomics.plotting import spatial_genes_on_tissue

    written = [
        # a file read from disk keeps its X there: the copy holds the annotations and results
        atomic(out / f"{stem}.h5ad", lambda p: light_copy(adata).write_h5ad(p)),
        _tsv(table.sort_values("pval"), out / f"{stem}.tsv"),
    ]
    figures = []
    if table["is_spatial"].any():
        paths = save_figure(spatial_genes_on_tissue(adata), out / f"{stem}_on_tissue")
        written += paths
        figures.append(("The most significant spatially variable genes on the tissue", paths[0]))
    return written, figures


def _top_genes(table: pd.DataFrame, n: int = 15) -> pd.DataFrame:
    cols = [c for c in ("fsv", "lengthscale", "llr", "pval", "qval") if c in table]
    return table.sort_values(["qval", "llr"], ascending=[True, False]).head(n)[cols]


def run_spatial_genes(args: argparse.Namespace) -> Section:
    """``diffomics spatial-genes DATA.h5ad`` (or ``.zarr``)."""
    from diffomics.spatial import spatial_genes

    start = time.perf_counter()
    adata = read_annotated(args.data, backed=args.backed)
    table = spatial_genes(
        adata,
        spatial_key=args.spatial_key,
        kernel=args.kernel,
        total_counts_key=args.total_counts_key,
        model_search=args.model_search,
        seed=args.seed,
        progress=None,
    )
    written, figures = spatial_genes_outputs(
        adata, table, Path(args.out), Path(args.data).stem + ".spatial_genes"
    )
    summary = (
        f"Gaussian-process test (SpatialDE's likelihood ratio, {args.kernel} kernel) of "
        f"{adata.n_vars} genes over {adata.n_obs} spots of {args.data}: "
        f"{int(table['is_spatial'].sum())} spatially variable at q < 0.05."
    )
    print(summary)
    return Section(
        "Spatially variable genes",
        summary,
        tables=[("Strongest genes (by q-value, then log-likelihood ratio)", _top_genes(table))],
        figures=figures,
        files=written,
        seconds=time.perf_counter() - start,
    )


# --- Hi-C ----------------------------------------------------------------------------------


def _best_window(weights: np.ndarray, size: int) -> tuple[int, int]:
    """The `size`-bin window with the most balanced (unmasked) bins, nearest the middle."""
    valid = np.isfinite(np.asarray(weights, dtype=float))
    n = len(valid)
    size = min(size, n)
    counts = np.convolve(valid, np.ones(size), mode="valid")
    best = np.flatnonzero(counts == counts.max())
    lo = int(best[np.argmin(np.abs(best - (n - size) / 2))])
    return lo, lo + size


def hic_outputs(result, out: Path, stem: str) -> tuple[list[Path], list]:
    """Write the tables (tsv), boundaries (BED), loops (BEDPE) and the tracks figure."""
    from diffomics.plotting import hic_tracks

    tables = {
        "expected": result.expected,
        "insulation": result.insulation,
        "compartments": result.compartments,
    }
    written = [
        _tsv(table, out / f"{stem}.{name}.tsv", index=False)
        for name, table in tables.items()
        if table is not None
    ]
    written.append(atomic(out / f"{stem}.boundaries.bed", result.write_bed))
    if result.loops is not None:
        written.append(atomic(out / f"{stem}.loops.bedpe", result.write_bedpe))
    shown = next(iter(result.regions.values())) if result.regions else result
    lo, hi = _best_window(shown.weights, 600)
    starts = shown.map.bins["start"].to_numpy()
    region = (int(starts[lo]), int(starts[hi - 1]) + shown.map.resolution)
    span = region[1] - region[0]
    paths = save_figure(hic_tracks(shown, region=region), out / f"{stem}.tracks")
    caption = (
        f"Balanced contacts (log scale) of {span // 1000:,} kb of "
        f"{shown.map.bins['chrom'].iloc[0]} with loops circled, the first "
        "eigenvector (A red, B blue) and the insulation score with its boundaries"
    )
    return written + paths, [(caption, paths[0])]


def hic_summary(result) -> str:
    """One line: the map, its masked bins, boundaries per window and loops."""
    r = result.report
    windows = sorted(result.boundaries["window"].unique())
    per_window = ", ".join(
        f"{int((result.boundaries['window'] == w).sum())} at {w // 1000} kb" for w in windows
    )
    loops = f"; {len(result.loops)} loops" if result.loops is not None else ""
    return (
        f"{os.path.basename(r['source'])}: {r['n_bins']} bins of {r['resolution'] // 1000} kb, "
        f"{r.get('n_masked_bins', 0)} masked; boundaries {per_window or 'none'}{loops}"
    )


def hic_table(result) -> pd.DataFrame:
    """Per insulation window: boundaries and their strength; compartments and loops."""
    rows = []
    for w, group in result.boundaries.groupby("window"):
        rows.append(
            {
                "window (kb)": w // 1000,
                "boundaries": len(group),
                "median strength": float(group["boundary_strength"].median())
                if "boundary_strength" in group
                else np.nan,
            }
        )
    table = pd.DataFrame(rows).set_index("window (kb)")
    return table


def _hic_facts(result) -> pd.DataFrame:
    facts = {"bins": result.map.n_bins, "resolution (bp)": result.map.resolution}
    facts["masked bins"] = result.report.get("n_masked_bins", 0)
    if result.compartments is not None:
        e1 = result.compartments["E1"].to_numpy()
        ok = np.isfinite(e1)
        facts["bins in A (E1 > 0)"] = f"{np.mean(e1[ok] > 0):.1%}" if ok.any() else "n/a"
    if result.loops is not None:
        facts["loops"] = len(result.loops)
    return pd.DataFrame({"value": pd.Series(facts, dtype=object)})


def hic_section(result, written, figures, *, what: str, seconds: float, extra: str = "") -> Section:
    """The report section of one analysed map."""
    summary = f"{what} {hic_summary(result)}.{(' ' + extra) if extra else ''}"
    return Section(
        "Hi-C contact map",
        summary,
        tables=[("Map", _hic_facts(result)), ("Insulation boundaries", hic_table(result))],
        figures=figures,
        files=written,
        seconds=seconds,
    )


def run_hic(args: argparse.Namespace) -> Section:
    """``diffomics hic MAP.cool[::/resolutions/N] [--region chr20]``."""
    from diffomics.hic import analyze, read_cool

    start = time.perf_counter()
    region = args.region.split(",") if args.region and "," in args.region else args.region
    cmap = read_cool(args.map, region)
    track = read_track(args.phasing_track, cmap.bins) if args.phasing_track else None
    windows = tuple(int(w) for w in args.windows.split(",")) if args.windows else None
    result = analyze(cmap, windows=windows, phasing_track=track, loops=not args.no_loops,
                     progress=None)
    first, last = cmap.chroms[0], cmap.chroms[-1]
    name = first if first == last else f"{first}-{last}"
    stem = f"{Path(args.map.split('::')[0]).stem}.{name}"
    written, figures = hic_outputs(result, Path(args.out), stem)
    print(hic_summary(result))
    what = (
        "ICE balancing, distance-decay expected, compartment eigenvectors, insulation "
        f"boundaries{'' if args.no_loops else ' and HiCCUPS-style dots'} of {args.map}"
        f"{f' ({args.region})' if args.region else ''}:"
    )
    return hic_section(result, written, figures, what=what, seconds=time.perf_counter() - start)


# --- integration ---------------------------------------------------------------------------


def _parse_likelihoods(text: str | None) -> dict | None:
    if not text:
        return None
    pairs = [item.partition("=") for item in text.split(",")]
    if any(not name or not sep or not lik for name, sep, lik in pairs):
        msg = f"--likelihood expects NAME=LIKELIHOOD[,NAME=LIKELIHOOD]; found {text!r}."
        raise UserError(msg)
    return {name: lik for name, _, lik in pairs}


def integration_metrics(model, mods: dict, labels) -> pd.DataFrame:
    """FOSCTTM between single-modality latents (paired cells) and label metrics."""
    from diffomics.integration import foscttm, knn_label_accuracy, label_silhouette

    rows = {}
    names = list(mods)
    z = model.latent()
    masks = {n: np.asarray(model.data[f"{n}_mask"], dtype=bool) for n in names
             if f"{n}_mask" in model.data}  # fmt: skip
    latents = {n: model.latent([n]) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = masks.get(a, np.ones(len(z), bool)) & masks.get(b, np.ones(len(z), bool))
            if both.sum() >= 3:
                rows[f"FOSCTTM {a} vs {b} (0 best, 0.5 random)"] = foscttm(
                    latents[a][both], latents[b][both]
                )
    if labels is not None:
        rows["15-NN label accuracy (joint latent)"] = knn_label_accuracy(z, labels)
        rows["label silhouette, (s + 1) / 2"] = label_silhouette(z, labels)
    weights = model.report.get("modality_weights")
    if model.module.config.modality_weight_mode == "learnable" and weights is not None:
        for n, w in zip(names, weights, strict=False):
            rows[f"modality weight {n}"] = w
    return pd.DataFrame({"value": pd.Series(rows, dtype=float)})


def integration_outputs(model, mods: dict, labels, out: Path, stem: str, *, title: str):
    """Write the latent table, one AnnData per modality, the model and the latent figure."""
    from diffomics.plotting import latent_scatter

    z = model.latent()
    table = pd.DataFrame(z, index=model.cells, columns=[f"z{i}" for i in range(z.shape[1])])
    if labels is not None:
        table["label"] = labels
    written = [_tsv(table, out / f"{stem}.latent.tsv")]
    for name, adata in mods.items():
        # a streamed modality's X stays in its input file: the copy holds the annotations
        keep = light_copy(adata)
        written.append(atomic(out / f"{stem}.{name}.h5ad", lambda p, a=keep: a.write_h5ad(p)))
    written.append(atomic_folder(out / f"{stem}.model", model.save))
    paths = save_figure(latent_scatter(z, labels, title=title), out / f"{stem}.latent")
    caption = "First two principal components of the joint latent space" + (
        ", coloured by label" if labels is not None else ""
    )
    return written + paths, [(caption, paths[0])]


def run_integrate(args: argparse.Namespace) -> Section:
    """``diffomics integrate DATA.h5mu`` or ``diffomics integrate rna=A.h5ad atac=B.h5ad``."""
    from diffomics.integration import integrate

    start = time.perf_counter()
    mods, stem = read_modalities(args.data, backed=args.backed)
    first = next(iter(mods.values()))
    for key in (args.labels, args.batch_key):
        if key is not None and key not in first.obs:
            msg = f"obs of modality {next(iter(mods))!r} has no column {key!r}; found "
            msg += f"{list(first.obs.columns)}."
            raise UserError(msg)
    model = integrate(
        mods,
        likelihoods=_parse_likelihoods(args.likelihood),
        latent_dim=args.latent_dim,
        batch_key=args.batch_key,
        join=args.join,
        max_epochs=args.max_epochs,
        seed=args.seed,
        progress=None,
        checkpoint=args.checkpoint,
    )
    labels = None
    if args.labels is not None:
        labels = first.obs[args.labels].reindex(model.cells).astype(str).to_numpy()
    written, figures = integration_outputs(
        model, mods, labels, Path(args.out), stem + ".integrated", title="joint latent"
    )
    rep = model.report
    summary = (
        f"Product-of-experts VAE over {len(model.cells)} cells of {', '.join(args.data)} "
        f"(modalities {', '.join(f'{n} {a.n_vars:,} features' for n, a in mods.items())}; "
        f"join={args.join}), latent size {args.latent_dim}: {rep['epochs']} epochs "
        f"({rep['seconds_per_epoch']:.2f} s each after {rep['first_epoch_seconds']:.1f} s for "
        f"the first, with JIT compilation); joint latent in obsm['X_diffomics']."
    )
    print(summary)
    return Section(
        "Multi-omics integration",
        summary,
        tables=[("Integration metrics", integration_metrics(model, mods, labels))],
        figures=figures,
        files=written,
        seconds=time.perf_counter() - start,
    )
