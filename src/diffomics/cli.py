"""The ``diffomics`` command line: one subcommand per analysis, no logic of its own.

Each subcommand parses its arguments (defaults read from the analysis signature), calls the
analysis, writes its outputs atomically and prints where they are. A user error (missing
file, wrong format, missing key, bad value) prints one line and exits with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]


class UserError(Exception):
    """A problem with the user's input, reported in one line."""


def _default(func: Callable, name: str):
    return inspect.signature(func).parameters[name].default


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write `path` through a temporary file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _save_figure(fig, stem: Path, formats=("png", "svg")) -> list[Path]:
    """Write `fig` atomically as ``stem.<format>`` for each format, then close it."""
    import matplotlib.pyplot as plt

    paths = [
        _atomic(
            stem.with_name(f"{stem.name}.{fmt}"),
            lambda p, f=fmt: fig.savefig(p, dpi=120, format=f, bbox_inches="tight"),
        )
        for fmt in formats
    ]
    plt.close(fig)
    return paths


def _read_h5ad(path: str):
    import anndata as ad

    if not Path(path).is_file():
        msg = f"{path}: no such file."
        raise UserError(msg)
    try:
        return ad.read_h5ad(path)
    except OSError as err:
        msg = f"{path}: not a readable .h5ad file ({err})."
        raise UserError(msg) from err


def _write_deconvolution(spots, result, out: Path, stem: str) -> list[Path]:
    """Write the AnnData, the proportions table and the proportions figure."""
    from diffomics.plotting import proportions_on_tissue

    written = [
        _atomic(out / f"{stem}.h5ad", lambda p: spots.write_h5ad(p)),
        _atomic(
            out / "proportions.tsv",
            lambda p: result.proportions.to_csv(p, sep="\t", float_format="%.6g"),
        ),
    ]
    if "spatial" in spots.obsm:
        written += _save_figure(proportions_on_tissue(spots), out / "proportions_on_tissue")
    return written


def _cmd_deconvolve(args: argparse.Namespace) -> None:
    from diffomics.spatial import deconvolve

    spatial, reference = _read_h5ad(args.spatial), _read_h5ad(args.reference)
    result = deconvolve(
        spatial,
        reference,
        args.labels,
        likelihood=args.likelihood,
        mode=args.mode,
        spatial_prior=args.spatial_prior,
        seed=args.seed,
        progress=None,
    )
    out = Path(args.out)
    written = _write_deconvolution(spatial, result, out, Path(args.spatial).stem + ".deconvolved")
    print(
        f"deconvolved {spatial.n_obs} spots into {result.proportions.shape[1]} cell types "
        f"over {result.genes['n_shared']} shared genes in {result.fit.n_steps} steps"
    )
    for path in written:
        print(f"wrote {path}")


def _cmd_spatial_genes(args: argparse.Namespace) -> None:
    from diffomics.plotting import spatial_genes_on_tissue
    from diffomics.spatial import spatial_genes

    adata = _read_h5ad(args.data)
    table = spatial_genes(
        adata,
        spatial_key=args.spatial_key,
        kernel=args.kernel,
        total_counts_key=args.total_counts_key,
        model_search=args.model_search,
        seed=args.seed,
        progress=None,
    )
    out = Path(args.out)
    stem = Path(args.data).stem
    written = [
        _atomic(out / f"{stem}.spatial_genes.h5ad", lambda p: adata.write_h5ad(p)),
        _atomic(
            out / "spatial_genes.tsv",
            lambda p: table.sort_values("pval").to_csv(p, sep="\t", float_format="%.6g"),
        ),
    ]
    if table["is_spatial"].any():
        written += _save_figure(spatial_genes_on_tissue(adata), out / "spatial_genes_on_tissue")
    print(
        f"tested {adata.n_vars} genes over {adata.n_obs} spots: "
        f"{int(table['is_spatial'].sum())} spatially variable at q < 0.05"
    )
    for path in written:
        print(f"wrote {path}")


def _read_track(path: str, bins):
    """A phasing track: a bedGraph (4th column numeric) or features counted per bin."""
    import pandas as pd

    from diffomics.hic import count_features

    if not Path(path).is_file():
        msg = f"{path}: no such file."
        raise UserError(msg)
    table = pd.read_csv(path, sep="\t", header=None, comment="#")
    if table.shape[1] < 3:
        msg = f"{path}: expected a BED / bedGraph file (chrom, start, end[, value])."
        raise UserError(msg)
    table = table.rename(columns={0: "chrom", 1: "start", 2: "end"})
    if table.shape[1] >= 4 and pd.api.types.is_numeric_dtype(table[3]):
        return table[["chrom", "start", "end", 3]].rename(columns={3: "value"})
    return count_features(table, bins)


def _write_hic(result, out: Path, stem: str) -> list[Path]:
    """Write the tables (tsv), boundaries (BED), loops (BEDPE) and the tracks figure."""
    from diffomics.plotting import hic_tracks

    tables = {
        "expected": result.expected,
        "insulation": result.insulation,
        "compartments": result.compartments,
    }
    written = [
        _atomic(out / f"{stem}.{name}.tsv",
                lambda p, t=table: t.to_csv(p, sep="\t", index=False, float_format="%.6g"))
        for name, table in tables.items()
        if table is not None
    ]  # fmt: skip
    written.append(_atomic(out / f"{stem}.boundaries.bed", result.write_bed))
    if result.loops is not None:
        written.append(_atomic(out / f"{stem}.loops.bedpe", result.write_bedpe))
    n_bins = result.map.n_bins
    start = int(result.map.bins["start"].iloc[0])
    span = min(n_bins, 600) * result.map.resolution
    middle = start + max(0, (n_bins * result.map.resolution - span) // 2)
    fig = hic_tracks(result, region=(middle, middle + span))
    return written + _save_figure(fig, out / f"{stem}.tracks")


def _hic_summary(result) -> str:
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


def _cmd_hic(args: argparse.Namespace) -> None:
    from diffomics.hic import analyze, read_cool

    cmap = read_cool(args.map, args.region)
    track = _read_track(args.phasing_track, cmap.bins) if args.phasing_track else None
    windows = tuple(int(w) for w in args.windows.split(",")) if args.windows else None
    result = analyze(cmap, windows=windows, phasing_track=track, loops=not args.no_loops)
    out = Path(args.out)
    stem = Path(args.map.split("::")[0]).stem + "." + str(cmap.bins["chrom"].iloc[0])
    written = _write_hic(result, out, stem)
    print(_hic_summary(result))
    for path in written:
        print(f"wrote {path}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from diffomics.sources import SeqFISHSource
    from diffomics.spatial import deconvolve, pool_pseudo_spots, proportion_metrics

    start = time.perf_counter()
    source = SeqFISHSource()
    cells, reference = source.spatial, source.reference
    spots = pool_pseudo_spots(cells, "cell_type", spot_size=args.spot_size)
    spots.uns["provenance"] = source.load()["dataset_provenance"]
    print(
        f"seqFISH cortex (Zhu et al. 2018): {cells.n_obs} imaged cells pooled into "
        f"{spots.n_obs} pseudo-spots of {spots.obs['n_cells'].mean():.1f} cells on average "
        f"(grid side {args.spot_size:g}); reference: {reference.n_obs} Tasic 2016 "
        "scRNA-seq cells."
    )
    print("values are the authors' normalised 0-101 scale, not counts: Gaussian likelihood.")
    result = deconvolve(
        spots, reference, "cell_type", likelihood="gaussian", seed=args.seed, progress=None
    )
    truth = spots.obsm["proportions_true"]
    ours = proportion_metrics(truth, result.proportions)
    floor_frame = truth * 0.0 + reference.obs["cell_type"].value_counts(normalize=True)
    floor = proportion_metrics(truth, floor_frame.fillna(0.0))
    out = Path(args.out)
    written = _write_deconvolution(spots, result, out, "seqfish_pseudospots")
    report = {"diffomics": ours, "floor (reference composition)": floor}
    written.append(
        _atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(report, indent=2)))
    )
    print(
        f"fit: {result.fit.n_steps} steps, {result.fit.fit_seconds:.1f} s "
        f"(+{result.fit.compile_seconds:.1f} s compile)"
    )
    for name, m in report.items():
        print(
            f"  {name:>30}: RMSE {m['rmse']:.4f}  JSD {m['jsd']:.4f}  "
            f"Pearson per type {m['pearson_type']:.3f}"
        )
    print("mean estimated composition:")
    print(result.proportions.mean().sort_values(ascending=False).round(3).to_string())
    written += _demo_spatial_genes(out)
    written += _demo_hic(out)
    written += _demo_integration(out, seed=args.seed)
    for path in written:
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")


def _demo_spatial_genes(out: Path) -> list[Path]:
    """Spatially variable genes of the bundled mouse olfactory bulb, as SpatialDE's paper."""
    import numpy as np

    from diffomics.datasets import mouse_olfactory_bulb
    from diffomics.plotting import spatial_genes_on_tissue
    from diffomics.spatial import spatial_genes

    mob = mouse_olfactory_bulb()
    mob = mob[:, np.asarray(mob.X.sum(axis=0)).ravel() >= 3].copy()
    table = spatial_genes(mob, total_counts_key="total_counts", progress=None)
    print(
        f"mouse olfactory bulb (Stahl et al. 2016): {mob.n_vars} genes over {mob.n_obs} spots, "
        f"{int(table['is_spatial'].sum())} spatially variable at q < 0.05; strongest:"
    )
    print(
        table.sort_values("llr", ascending=False)
        .head(5)[["fsv", "lengthscale", "qval"]]
        .to_string(float_format=lambda v: f"{v:.3g}")
    )
    written = [
        _atomic(
            out / "mob_spatial_genes.tsv",
            lambda p: table.sort_values("pval").to_csv(p, sep="\t", float_format="%.6g"),
        )
    ]
    return written + _save_figure(
        spatial_genes_on_tissue(mob), out / "mob_spatial_genes_on_tissue", formats=("png",)
    )


def _demo_hic(out: Path) -> list[Path]:
    """The bundled GM12878 chr20 map at 25 kb, against the published calls."""
    import numpy as np

    from diffomics.datasets import gm12878_annotations, gm12878_hic
    from diffomics.hic import analyze, count_features, read_cool

    published = gm12878_annotations()
    ctcf = published["ctcf"].assign(summit_pos=lambda t: t["start"] + t["summit"])
    cmap = read_cool(gm12878_hic("chr20"))
    track = count_features(ctcf, cmap.bins, position="summit_pos")
    result = analyze(cmap, phasing_track=track)
    print(f"GM12878 Hi-C (Rao et al. 2014), {_hic_summary(result)}")
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
    print(
        f"  E1 phased by CTCF-peak density (Pearson {rho:.2f}); {np.mean(near):.0%} of the "
        f"{len(called)} boundaries at {w // 1000} kb are within 1 bin of a published Arrowhead "
        f"domain end; {np.mean(hit):.0%} of the {len(truth)} published HiCCUPS loops are "
        "within 1 bin of a called loop"
    )
    return _write_hic(result, out, "gm12878_chr20")


def _demo_integration(out: Path, *, seed: int) -> list[Path]:
    """Integrate the bundled SNARE-seq RNA + ATAC features (four cell lines)."""
    import pandas as pd

    from diffomics.datasets import snareseq_celllines
    from diffomics.integration import foscttm, integrate, knn_label_accuracy, label_silhouette
    from diffomics.plotting import latent_scatter

    data = snareseq_celllines()
    model = integrate(data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, seed=seed,
                      progress=False)  # fmt: skip
    labels = data["rna"].obs["cell_line"].to_numpy()
    z = model.latent()
    print(
        f"SNARE-seq (Chen et al. 2019): {len(z)} cells, RNA + ATAC features, "
        f"{model.report['epochs']} epochs ({model.report['seconds_per_epoch']:.2f} s each): "
        f"FOSCTTM {foscttm(model.latent(['rna']), model.latent(['atac'])):.3f} "
        f"(0 = perfect, 0.5 = random), cell-line kNN accuracy {knn_label_accuracy(z, labels):.3f}, "
        f"silhouette {label_silhouette(z, labels):.3f}"
    )
    columns = [f"z{i}" for i in range(z.shape[1])]
    table = pd.DataFrame(z, index=data["rna"].obs_names, columns=columns)
    table["cell_line"] = labels
    written = [_atomic(out / "snareseq_latent.tsv",
                       lambda p: table.to_csv(p, sep="\t", float_format="%.5g"))]  # fmt: skip
    fig = latent_scatter(z, labels, title="SNARE-seq joint latent (diffomics)")
    return written + _save_figure(fig, out / "snareseq_latent", formats=("png",))


def _parser() -> argparse.ArgumentParser:
    from diffomics.spatial import deconvolve

    parser = argparse.ArgumentParser(prog="diffomics", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="deconvolve bundled seqFISH pseudo-spots; spatial genes of the bundled MOB; "
        "Hi-C of the bundled GM12878 chr20; integrate the bundled SNARE-seq RNA + ATAC",
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument("--spot-size", type=float, default=250.0, help="pseudo-spot grid side")
    demo.add_argument("--seed", type=int, default=_default(deconvolve, "seed"))
    demo.set_defaults(func=_cmd_demo)

    dec = sub.add_parser("deconvolve", help="cell-type proportions of spatial spots")
    dec.add_argument("spatial", help="spots x genes .h5ad (counts in X)")
    dec.add_argument("reference", help="cells x genes .h5ad with labels")
    dec.add_argument("--labels", required=True, help="column of reference.obs with types")
    dec.add_argument(
        "--likelihood",
        default=_default(deconvolve, "likelihood"),
        choices=["nb", "poisson", "gaussian"],
    )
    dec.add_argument(
        "--mode", default=_default(deconvolve, "mode"), choices=["direct", "amortized"]
    )
    dec.add_argument("--spatial-prior", type=float, default=_default(deconvolve, "spatial_prior"))
    dec.add_argument("--seed", type=int, default=_default(deconvolve, "seed"))
    dec.add_argument("--out", default="diffomics_out", help="output folder")
    dec.set_defaults(func=_cmd_deconvolve)

    from diffomics.spatial import spatial_genes

    svg = sub.add_parser("spatial-genes", help="spatially variable genes (GP test)")
    svg.add_argument("data", help="spots x genes .h5ad with coordinates in obsm")
    svg.add_argument("--spatial-key", default=_default(spatial_genes, "spatial_key"))
    svg.add_argument(
        "--kernel", default=_default(spatial_genes, "kernel"), choices=["se", "periodic", "linear"]
    )
    svg.add_argument("--total-counts-key", default=_default(spatial_genes, "total_counts_key"))
    svg.add_argument("--model-search", action="store_true", help="choose kernels by BIC")
    svg.add_argument("--seed", type=int, default=_default(spatial_genes, "seed"))
    svg.add_argument("--out", default="diffomics_out", help="output folder")
    svg.set_defaults(func=_cmd_spatial_genes)

    hic = sub.add_parser("hic", help="Hi-C: balance, expected, compartments, TADs, loops")
    hic.add_argument("map", help="MAP.cool or MAP.mcool::/resolutions/N")
    hic.add_argument("--region", default=None, help="chromosome or chrom:start-end")
    hic.add_argument("--windows", default=None, help="insulation windows in bp, comma-separated")
    hic.add_argument("--phasing-track", default=None,
                     help="bedGraph (values) or BED (features counted per bin), higher in A")
    hic.add_argument("--no-loops", action="store_true", help="skip dot calling")
    hic.add_argument("--out", default="diffomics_out", help="output folder")
    hic.set_defaults(func=_cmd_hic)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffomics`` console script; returns the exit status."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, KeyError, FileNotFoundError) as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"diffomics {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
