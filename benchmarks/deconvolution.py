"""Deconvolution benchmark: diffomics vs NNLS, cell2location and upstream DiffBio on real cells.

Protocol (the pseudo-spot design of the seqFISH+/MERFISH/osmFISH deconvolution benchmarks):
imaged single cells are summed on a square grid into pseudo-spots, so the true cell-type
proportions of every spot are known exactly.

- seqFISH cortex (Zhu 2018): 1,597 cells, 113 genes, 8 types, on the authors' normalised
  0-101 scale (not counts); reference: the matched Tasic 2016 scRNA-seq cells, same scale.
- osmFISH (Codeluppi 2018): 4,839 cells, 33 genes, 31 types, raw molecule counts; the
  reference is half of the cells of each type (seed 0), the spots are pooled from the other
  half, so no cell is in both.

Every method runs in its own child process with the same thread limits; fit time excludes
JIT compilation (reported separately) and data loading. Run with ``make bench-deconv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import (  # noqa: E402
    RESULTS_DIR,
    machine,
    merge_previous,
    pinned_cpus,
    run_child,
    write_results,
)

SEED = 0
DATASETS = {
    # spot side in coordinate units, chosen for about 5-6 cells per spot
    "seqfish_cortex": {"spot_size": 250.0},
    "osmfish_sscortex": {"spot_size": 1200.0, "reference_fraction": 0.5},
}
OURS = {
    "diffomics (nb)": {"likelihood": "nb"},
    "diffomics (poisson)": {"likelihood": "poisson"},
    "diffomics (gaussian)": {"likelihood": "gaussian"},
    "diffomics (nb/amortized)": {"likelihood": "nb", "mode": "amortized"},
}
PEERS = ("floor", "nnls", "nnls (per-cell profiles)", "cell2location", "diffbio 0.1.9")
LABELS = "cell_type"


def prepare(name: str, folder: Path) -> dict:
    """Write the pseudo-spots and the reference of dataset `name` to `folder`."""
    from diffomics.datasets import osmfish, seqfish_cortex
    from diffomics.spatial import pool_pseudo_spots, split_cells

    settings = DATASETS[name]
    if name == "seqfish_cortex":
        cells, reference = seqfish_cortex()
    else:
        reference, cells = split_cells(
            osmfish(), LABELS, fraction=settings["reference_fraction"], seed=SEED
        )
    spots = pool_pseudo_spots(cells, LABELS, spot_size=settings["spot_size"])
    for adata in (spots, reference):
        adata.uns.pop("provenance", None)
    folder.mkdir(parents=True, exist_ok=True)
    spots.write_h5ad(folder / "spots.h5ad")
    reference.write_h5ad(folder / "reference.h5ad")
    return {
        "n_spots": int(spots.n_obs),
        "n_genes": int(spots.n_vars),
        "n_cell_types_reference": int(reference.obs[LABELS].nunique()),
        "n_reference_cells": int(reference.n_obs),
        "cells_per_spot_mean": float(spots.obs["n_cells"].mean()),
        "spot_size": settings["spot_size"],
        "counts": name != "seqfish_cortex",
    }


def _load(folder: Path):
    import anndata as ad

    return ad.read_h5ad(folder / "spots.h5ad"), ad.read_h5ad(folder / "reference.h5ad")


def _nnls(spots, reference, *, per_cell: bool):
    from scipy.optimize import nnls

    from diffomics.spatial import reference_profiles

    profiles = reference_profiles(reference, LABELS, library_normalize=not per_cell)
    start = time.perf_counter()
    weights = np.array([nnls(profiles.to_numpy().T, x)[0] for x in np.asarray(spots.X)])
    seconds = time.perf_counter() - start
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
    return weights, list(profiles.index), seconds, 0.0, ""


def _keep_proportions(dataset: str, method: str, spots, types, props) -> None:
    """Save a method's proportions under results/ (tests compare with the peers' output)."""
    import pandas as pd

    slug = "".join(c if c.isalnum() else "_" for c in method).strip("_")
    path = RESULTS_DIR / "deconvolution_proportions" / dataset / f"{slug}.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(np.asarray(props, dtype=np.float64), index=spots, columns=types)
    frame.to_csv(path, float_format="%.6g")


def run_method(method: str, folder: Path, out: Path, args) -> None:
    """Run one method in this (child) process and save proportions and timings to `out`."""
    warnings.simplefilter("ignore")
    spots, reference = _load(folder)
    notes = ""
    if method == "floor":
        start = time.perf_counter()
        freq = reference.obs[LABELS].value_counts(normalize=True).sort_index()
        props = np.tile(freq.to_numpy(), (spots.n_obs, 1))
        types, fit_s, compile_s = list(freq.index), time.perf_counter() - start, 0.0
        notes = "the reference's composition predicted for every spot"
    elif method.startswith("nnls"):
        per_cell = "per-cell" in method
        props, types, fit_s, compile_s, _ = _nnls(spots, reference, per_cell=per_cell)
        notes = "scipy.optimize.nnls on " + (
            "per-type mean counts per cell" if per_cell else "library-normalised per-type means"
        )
    elif method in OURS:
        from diffomics.spatial import deconvolve

        result = deconvolve(spots, reference, LABELS, seed=SEED, progress=False, **OURS[method])
        props, types = result.proportions.to_numpy(), list(result.proportions.columns)
        fit_s, compile_s = result.fit.fit_seconds, result.fit.compile_seconds
        notes = f"{result.fit.n_steps} Adam steps; " + json.dumps(OURS[method])
    elif method == "cell2location":
        sys.path.insert(0, str(Path(__file__).parent / "peers"))
        from cell2location_deconv import deconvolve_cell2location

        out_c2l = deconvolve_cell2location(
            spots,
            reference,
            LABELS,
            n_cells_per_spot=float(spots.obs["n_cells"].mean()),
            seed=SEED,
            threads=args.threads,
            max_epochs=args.c2l_epochs,
        )
        frame = out_c2l["proportions"]
        props, types = frame.to_numpy(), list(frame.columns)
        fit_s, compile_s, notes = (
            out_c2l["fit_seconds"],
            out_c2l["compile_seconds"],
            out_c2l["notes"],
        )
    else:
        raise SystemExit(f"unknown method {method!r}")
    _keep_proportions(folder.name, method, spots.obs_names, types, props)
    np.savez(
        out,
        proportions=np.asarray(props, dtype=np.float64),
        types=np.array(types),
        fit_seconds=fit_s,
        compile_seconds=compile_s,
        notes=notes,
    )


def run_diffbio(folder: Path, out: Path, args) -> list[str]:
    """Prepare the npz input of the DiffBio runner; return its command line."""
    from diffomics.spatial import reference_profiles

    spots, reference = _load(folder)
    profiles = reference_profiles(reference, LABELS)
    np.savez(
        folder / "diffbio_in.npz",
        spots=np.asarray(spots.X, dtype=np.float32),
        coords=np.asarray(spots.obsm["spatial"], dtype=np.float32),
        reference_profiles=profiles.to_numpy(np.float32),
        types=np.array(profiles.index, dtype=str),
        seed=SEED,
        n_steps=args.diffbio_steps,
        learning_rate=1e-3,
        threads=args.threads,
    )
    runner = Path(__file__).parent / "peers" / "diffbio_deconv.py"
    return [args.diffbio_python, str(runner), str(folder / "diffbio_in.npz"), str(out)]


def score(folder: Path, out: Path) -> dict:
    """Accuracy of the proportions saved in `out` against the pseudo-spot truth."""
    import pandas as pd

    from diffomics.spatial import proportion_metrics

    spots, _ = _load(folder)
    with np.load(out, allow_pickle=False) as saved:
        if "types" in saved:
            types = [str(t) for t in saved["types"]]
        else:
            types = [str(t) for t in np.load(folder / "diffbio_in.npz")["types"]]
        predicted = pd.DataFrame(saved["proportions"], index=spots.obs_names, columns=types)
        record = proportion_metrics(spots.obsm["proportions_true"], predicted)
        record["fit_seconds"] = float(saved["fit_seconds"])
        record["compile_seconds"] = float(saved["compile_seconds"])
        record["notes"] = str(saved["notes"]) if "notes" in saved else ""
    return record


def markdown(payload: dict) -> str:
    """Markdown tables of the results, one per dataset."""
    lines = [
        "# Deconvolution benchmark",
        "",
        f"Command: `{payload['command']}`; {payload['threads']} thread(s) per tool, each "
        f"pinned to the same CPU(s) of a {payload['machine']['cpu_count']}-CPU machine, "
        f"{payload['machine']['date']}.",
        "Pseudo-spots pooled from real imaged cells (true proportions known exactly). "
        "RMSE and JSD (bits, mean over spots): lower is better; Pearson per cell type "
        "(across spots) and per spot: higher is better. Fit time excludes JIT compilation "
        "(its own column) and data loading; peak memory is the method's process.",
        "",
    ]
    for name, block in payload["datasets"].items():
        info = block["data"]
        lines += [
            f"## {name}",
            "",
            f"{info['n_spots']} spots of {info['cells_per_spot_mean']:.1f} cells on average, "
            f"{info['n_genes']} genes, {info['n_cell_types_reference']} reference types; "
            f"values are {'counts' if info['counts'] else 'normalised (0-101), not counts'}.",
            "",
            "| method | RMSE | JSD | Pearson (type) | Pearson (spot) | fit s | compile s | "
            "cell2location time / time | peak MiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        c2l = block["methods"].get("cell2location", {})
        for method, r in block["methods"].items():
            if "error" in r:
                lines.append(f"| {method} | failed: {r['error']} | | | | | | | |")
                continue
            total = r["fit_seconds"] + r["compile_seconds"]
            speed = ""
            if "fit_seconds" in c2l and method.startswith("diffomics") and total > 0:
                speed = f"{(c2l['fit_seconds'] + c2l['compile_seconds']) / total:.0f}"
            lines.append(
                f"| {method} | {r['rmse']:.4f} | {r['jsd']:.4f} | {r['pearson_type']:.3f} | "
                f"{r['pearson_spot']:.3f} | {r['fit_seconds']:.2f} | {r['compile_seconds']:.2f} "
                f"| {speed} | {r['peak_rss_mib']:.0f} |"
            )
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in payload["notes"]] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join((*PEERS, *OURS)))
    parser.add_argument("--diffbio-python", default=".venv-diffbio/bin/python")
    parser.add_argument("--diffbio-steps", type=int, default=2000)
    parser.add_argument("--c2l-epochs", type=int, default=30000)
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the other methods' results of the last run and replace only these",
    )
    parser.add_argument("--run-method", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_method:
        run_method(args.run_method, Path(args.folder), Path(args.out), args)
        return
    payload = {
        "command": f"make bench-deconv THREADS={args.threads}",
        "argv": sys.argv[1:],
        "threads": args.threads,
        "seed": SEED,
        "machine": machine(),
        "datasets": {},
        "notes": [
            "seqFISH values are the authors' normalised 0-101 scale, not counts: the Gaussian "
            "likelihood is the honest model there; NB/Poisson treat the values as pseudo-counts "
            "and cell2location needs integers, so it gets them rounded.",
            "On seqFISH every type's reference profile is within about 11% of the mean profile; "
            "the floor (reference composition for every spot) is reported beside every number.",
            "The osmFISH reference is half of the cells of each type of the same section, "
            "spots are pooled from the other half (no cell in both).",
            "DiffBio 0.1.9 is trained as its documentation says (MSE of reconstruction minus "
            "0.01 x entropy, Adam); its model has no per-spot scale, so spots are rescaled to the "
            "reference profiles' mean total, and coordinates are standardised.",
        ],
    }
    if args.update:
        merge_previous("deconvolution", payload, "datasets", args.methods.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            folder = Path(tmp) / name
            block = {"data": prepare(name, folder), "methods": {}}
            if name in payload["datasets"]:
                block["methods"] = payload["datasets"][name]["methods"]
            print(f"[{name}] {block['data']}", flush=True)
            for method in args.methods.split(","):
                out = folder / f"{abs(hash(method))}.npz"
                if method.startswith("diffbio"):
                    cmd = run_diffbio(folder, out, args)
                else:
                    cmd = [sys.executable, __file__, "--run-method", method]
                    cmd += ["--folder", str(folder), "--out", str(out)]
                    cmd += ["--threads", str(args.threads), "--c2l-epochs", str(args.c2l_epochs)]
                child = run_child(cmd, threads=args.threads)
                child["cpus"] = pinned_cpus(args.threads)
                if child["returncode"] != 0 or not out.exists():
                    block["methods"][method] = {"error": f"exit {child['returncode']}"}
                else:
                    record = score(folder, out)
                    record.update(child)
                    block["methods"][method] = record
                print(f"[{name}] {method}: {block['methods'][method]}", flush=True)
            payload["datasets"][name] = block
    json_path, md_path = write_results("deconvolution", payload, markdown(payload))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
