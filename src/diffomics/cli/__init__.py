"""The ``diffomics`` command line: one subcommand per analysis, no statistics of its own.

Each subcommand reads the field's files, calls the analysis, writes its outputs atomically
(tables, AnnData, BED / BEDPE, PNG and SVG figures) and a self-contained ``report.html``
into ``--out``, and prints where they are. A user error (missing file, wrong format,
missing key, bad value) prints one line and exits with status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from diffomics.cli._io import UserError
from diffomics.cli._report import Section, write_report

__all__ = ["main"]

TITLES = {
    "demo": "diffomics demo: four analyses of real bundled data",
    "deconvolve": "diffomics deconvolve",
    "spatial-genes": "diffomics spatial-genes",
    "hic": "diffomics hic",
    "integrate": "diffomics integrate",
    "bench": "diffomics bench",
}


def _default(func: Callable, name: str):
    return inspect.signature(func).parameters[name].default


def _add_out(parser: argparse.ArgumentParser, default: str = "diffomics_out") -> None:
    parser.add_argument("--out", default=default, help=f"output folder (default {default})")


def _parser() -> argparse.ArgumentParser:
    from diffomics.cli._bench import ANALYSES, run_bench
    from diffomics.cli._commands import run_deconvolve, run_hic, run_integrate, run_spatial_genes
    from diffomics.cli._demo import run_demo
    from diffomics.integration import integrate
    from diffomics.spatial import deconvolve, spatial_genes

    parser = argparse.ArgumentParser(prog="diffomics", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="all four analyses on the bundled real data, with demo_out/report.html",
        description="Deconvolve seqFISH pseudo-spots, find spatially variable genes of the "
        "mouse olfactory bulb, analyse GM12878 chr20 Hi-C and integrate SNARE-seq RNA + ATAC.",
    )
    _add_out(demo, "demo_out")
    demo.add_argument("--spot-size", type=float, default=250.0, help="pseudo-spot grid side")
    demo.add_argument("--seed", type=int, default=_default(deconvolve, "seed"))
    demo.set_defaults(func=run_demo)

    dec = sub.add_parser(
        "deconvolve",
        help="cell-type proportions of spatial spots",
        description="Deconvolve the spots of an .h5ad file or AnnData Zarr store with a "
        "labelled single-cell reference. Zarr stores (and .h5ad files with --backed) are "
        "read and fitted a chunk of spots at a time; the .h5ad written for them holds obs, "
        "var, obsm and uns, not X.",
    )
    dec.add_argument("spatial", help="spots x genes .h5ad or .zarr (counts in X)")
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
    dec.add_argument("--checkpoint", default=None,
                     help="NPZ file the fit saves to and resumes from (a killed run restarts "
                     "where it stopped, with the same result)")  # fmt: skip
    dec.add_argument("--backed", action="store_true",
                     help="open the spots' .h5ad in backed mode and read it a chunk at a time")
    dec.add_argument("--chunk-size", type=int, default=_default(deconvolve, "chunk_size"),
                     help="spots fitted at a time (default: all, or 50,000 from a file)")
    _add_out(dec)
    dec.set_defaults(func=run_deconvolve)

    svg = sub.add_parser(
        "spatial-genes",
        help="spatially variable genes (GP test)",
        description="Test the genes of an .h5ad file or AnnData Zarr store for spatial "
        "variation. Zarr stores (and .h5ad files with --backed) are read a chunk of genes at "
        "a time, their standardised values kept in temporary files; the .h5ad written for "
        "them holds obs, var, obsm and uns, not X.",
    )
    svg.add_argument("data", help="spots x genes .h5ad or .zarr with coordinates in obsm")
    svg.add_argument("--spatial-key", default=_default(spatial_genes, "spatial_key"))
    svg.add_argument(
        "--kernel", default=_default(spatial_genes, "kernel"), choices=["se", "periodic", "linear"]
    )
    svg.add_argument("--total-counts-key", default=_default(spatial_genes, "total_counts_key"))
    svg.add_argument("--model-search", action="store_true", help="choose kernels by BIC")
    svg.add_argument("--seed", type=int, default=_default(spatial_genes, "seed"))
    svg.add_argument("--backed", action="store_true",
                     help="open the .h5ad in backed mode and read it a chunk of genes at a time")
    _add_out(svg)
    svg.set_defaults(func=run_spatial_genes)

    hic = sub.add_parser("hic", help="Hi-C: balance, expected, compartments, TADs, loops")
    hic.add_argument("map", help="MAP.cool or MAP.mcool::/resolutions/N")
    hic.add_argument("--region", default=None,
                     help="chromosome or chrom:start-end, or whole chromosomes comma-separated "
                     "(each analysed on its own, balanced together as cooler --cis-only)")
    hic.add_argument("--windows", default=None, help="insulation windows in bp, comma-separated")
    hic.add_argument("--phasing-track", default=None,
                     help="bedGraph (values) or BED (features counted per bin), higher in A")
    hic.add_argument("--no-loops", action="store_true", help="skip dot calling")
    _add_out(hic)
    hic.set_defaults(func=run_hic)

    itg = sub.add_parser(
        "integrate",
        help="joint latent space of paired modalities (product-of-experts VAE)",
        description="Integrate one .h5mu file, or several .h5ad files or AnnData Zarr "
        "stores given as NAME=FILE.h5ad (NAME defaults to the file stem), matched by "
        "obs_names. Zarr stores (and .h5ad files with --backed) are streamed a minibatch at "
        "a time; the .h5ad written for them holds obs, var and obsm, not X.",
    )
    itg.add_argument("data", nargs="+", help="DATA.h5mu, or NAME=FILE.h5ad|FILE.zarr ...")
    itg.add_argument("--backed", action="store_true",
                     help="open .h5ad files in backed mode and stream them from disk")  # fmt: skip
    itg.add_argument("--likelihood", default=None,
                     help="NAME=LIKELIHOOD,... (nb, zinb, poisson, bernoulli, gaussian); "
                     "default: rna, protein nb; atac bernoulli; others gaussian")  # fmt: skip
    itg.add_argument("--labels", default=None, help="obs column to colour and score by")
    itg.add_argument("--batch-key", default=None, help="obs column with batch labels")
    itg.add_argument("--join", default=_default(integrate, "join"), choices=["inner", "outer"],
                     help="inner: cells in every modality; outer: mosaic")  # fmt: skip
    itg.add_argument("--latent-dim", type=int, default=_default(integrate, "latent_dim"))
    itg.add_argument("--max-epochs", type=int, default=_default(integrate, "max_epochs"))
    itg.add_argument("--seed", type=int, default=_default(integrate, "seed"))
    itg.add_argument("--checkpoint", default=None,
                     help="NPZ file training saves to after every epoch and resumes from (a "
                     "killed run restarts where it stopped, with the same result)")  # fmt: skip
    _add_out(itg)
    itg.set_defaults(func=run_integrate)

    bench = sub.add_parser(
        "bench", help="time each analysis on the bundled data (compilation separate)"
    )
    bench.add_argument("--analyses", default=None, help=f"comma-separated of {list(ANALYSES)}")
    _add_out(bench, "diffomics_bench")
    bench.set_defaults(func=run_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffomics`` console script; returns the exit status."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        sections = args.func(args)
    except (UserError, ValueError, KeyError, FileNotFoundError) as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"diffomics {args.command}: error: {message}", file=sys.stderr)
        return 2
    sections = [sections] if isinstance(sections, Section) else sections
    for section in sections:
        for path in section.files:
            print(f"wrote {path}")
    report = write_report(
        Path(args.out) / "report.html",
        TITLES[args.command],
        sections,
        command=shlex.join(["diffomics", *argv]),
    )
    print(f"wrote {report}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
