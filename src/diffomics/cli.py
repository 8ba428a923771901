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


def _parser() -> argparse.ArgumentParser:
    from diffomics.spatial import deconvolve

    parser = argparse.ArgumentParser(prog="diffomics", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="deconvolve bundled seqFISH pseudo-spots; spatial genes of the bundled MOB"
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
