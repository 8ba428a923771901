"""Scaling: time and peak memory against data size, on 1 and 4 (simulated) devices.

Protocol. Each run is a child process (`_harness.run_child`: pinned to the same ``--threads``
CPUs, same thread limits, its own peak resident memory), with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` for ``D`` devices; with ``D > 1`` the
analysis gets ``mesh=diffomics.core.data_mesh()`` and its rows are split over the devices.
On a CPU the simulated devices share the same cores, so ``D = 4`` measures the cost of the
partitioned program (and shows that it runs and gives the same answer), not a speed-up; on
a machine with several accelerators the same code splits the work.

- ``deconvolution``: `deconvolve` (Poisson, direct mode) of simulated spots
  (`tests/spatial/simulate.py`: 8 types, 50 genes, 2-12 cells a spot) for exactly 200 Adam
  steps (``tol=0``); time per step from `FitResult` (the first chunk of 50 steps, which
  compiles, is reported apart). Accuracy: RMSE of the proportions against the planted ones.
- ``spots_in_memory`` / ``spots_backed``: out-of-core deconvolution. The same simulated
  spots (Poisson, 8 types, 50 genes), written by the parent to an ``.h5ad`` file with the
  reference; the child reads them with ``anndata.read_h5ad(path)`` (in memory) or with
  ``backed="r"`` (`deconvolve` then reads and fits 100,000 spots at a time,
  ``chunk_size``); exactly 200 Adam steps per fit (``tol=0``), so the chunked fit takes 200
  steps per chunk, the same steps per spot (see `deconvolve`). Peak memory, seconds of
  the call, the RMSE against the planted proportions, and the per-spot largest difference
  from the proportions fitted in memory (stored by the in-memory run in the same folder):
  median, maximum and the number of spots over 1e-4. Float32 rounding differs between
  the two programs, and Adam's normalised steps amplify it in the few spots whose
  gradients are still near zero after 200 steps (splitting 200,000 such spots as 199,999 +
  1 gives the same spread), so the maximum is far above the median.
- ``spatial_genes``: `spatial_genes` (Nystrom kernel, 500 inducing points, 5 lengthscales,
  no smoothing) of 100 simulated genes (20 with a planted sine pattern) on ``n`` random spots;
  the projections on the kernel's eigenvectors are summed over blocks of spots, one per
  device, then the genes are fitted split over the devices; wall time of the call, and the
  number of planted genes found at q < 0.05 and of null genes called.
- ``genes_in_memory`` / ``genes_backed``: out-of-core spatial genes. 10,000 simulated genes
  (100 with a planted wave, as ``spatial_genes``) on ``n`` spots, written by the parent to
  an ``.h5ad`` file; the child reads it into memory or opens it with ``backed="r"``
  (`spatial_genes` then reads it a chunk of genes at a time and keeps the standardised
  values and their permutations in temporary files); the same test as ``spatial_genes``;
  one device.
- ``integration``: `integrate` of two simulated Gaussian modalities (20 and 30 features,
  two groups of cells) for 3 epochs of minibatches of 512 cells, every minibatch split over
  the devices; median seconds per epoch after the first, and FOSCTTM.
- ``counts_in_memory`` / ``counts_backed`` / ``counts_zarr``: out-of-core input. `integrate`
  (NB likelihoods) of Poisson RNA counts (2,000 genes, sparse, mostly zero) and protein
  counts (30 markers) of ``n`` simulated cells whose means are log-linear in a shared 3-d
  latent state (two groups), written by the parent to ``.h5ad`` files and Zarr stores; the
  child reads them with ``anndata.read_h5ad(path)`` (in memory: the RNA matrix densified, 4
  bytes per value), with ``backed="r"`` or with `diffomics.integration.open_zarr`
  (streamed: each minibatch of 512 cells read from the file). 2 epochs; peak memory,
  seconds per epoch and FOSCTTM; one device.
- ``hic``: `hic.analyze` (balance, expected, insulation at 10 bins; no dots) of a Poisson
  power-law band of 100 diagonals at 10 kb, given as a scipy sparse matrix (no file); with
  4 devices the pixels (balancing, expected) and the rows of the band (insulation) are
  split over them. Compartments are left out: whatever the size they run on a map
  coarsened to at most ``compartment_max_bins`` (3,000) bins, and a band of 1 Mb has no
  contacts at that scale (200,000 bins coarsen to 670 kb bins, too few pixels to balance).
  ICE stops at its 200 iterations on these bands (a band passes the marginals on only 100
  bins per iteration); the time is that of the 200 iterations.

Run ``make bench-scale`` (``--threads 2``; ``--quick`` for the smallest sizes); writes
``benchmarks/results/scale.json`` and ``scale.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO))
from _harness import RESULTS_DIR, machine, run_child, write_results  # noqa: E402

NAME = "scale"
SIZES = {
    "deconvolution": (10_000, 100_000, 1_000_000),
    "spots_in_memory": (1_000_000,),
    "spots_backed": (1_000_000,),
    "spatial_genes": (10_000, 100_000),
    "genes_in_memory": (10_000,),
    "genes_backed": (10_000,),
    "integration": (10_000, 100_000),
    "counts_in_memory": (100_000,),
    "counts_backed": (100_000,),
    "counts_zarr": (100_000,),
    "hic": (10_000, 50_000, 200_000),
}
QUICK = {"deconvolution": (10_000,), "spots_in_memory": (10_000,), "spots_backed": (10_000,),
         "spatial_genes": (10_000,), "genes_in_memory": (2_000,), "genes_backed": (2_000,),
         "integration": (10_000,),
         "counts_in_memory": (10_000,), "counts_backed": (10_000,), "counts_zarr": (10_000,),
         "hic": (10_000,)}  # fmt: skip
DEVICES = {"deconvolution": (1, 4), "spots_in_memory": (1,), "spots_backed": (1,),
           "spatial_genes": (1, 4), "genes_in_memory": (1,), "genes_backed": (1,),
           "integration": (1, 4),
           "counts_in_memory": (1,), "counts_backed": (1,), "counts_zarr": (1,),
           "hic": (1, 4)}  # fmt: skip
COUNTS_GENES, COUNTS_PROTEINS = 2_000, 30
GENES_GENES, GENES_SPATIAL = 10_000, 100
SPOTS_CHUNK = 100_000
SEED = 0


def _mesh(devices: int):
    import jax

    from diffomics.core import data_mesh

    assert jax.device_count() == devices, (jax.device_count(), devices)
    return data_mesh() if devices > 1 else None


def _spots(n: int):
    from tests.spatial.simulate import simulate

    return simulate(n_spots=n, n_types=8, n_genes=50, cells_per_type=50, likelihood="poisson",
                    seed=SEED)  # fmt: skip


def run_deconvolution(n: int, devices: int) -> dict:
    from diffomics.spatial import deconvolve

    spatial, reference = _spots(n)
    truth = spatial.obsm["proportions_true"].to_numpy()
    start = time.perf_counter()
    res = deconvolve(spatial, reference, "cell_type", likelihood="poisson", max_steps=200,
                     tol=0.0, progress=False, mesh=_mesh(devices))  # fmt: skip
    total = time.perf_counter() - start
    steps = res.fit.n_steps
    return {
        "seconds": total,
        "first_chunk_seconds": res.fit.compile_seconds,
        "seconds_per_step": res.fit.fit_seconds / max(steps - 50, 1),
        "steps": steps,
        "rmse": float(np.sqrt(np.mean((res.proportions.to_numpy() - truth) ** 2))),
    }


def write_spots(folder: Path, n: int) -> None:
    """The deconvolution workload's spots (dense float32 ``X``) and reference, ``.h5ad``."""
    spatial, reference = _spots(n)
    spatial.X = np.asarray(spatial.X, np.float32)
    spatial.write_h5ad(folder / "spots.h5ad")
    reference.write_h5ad(folder / "reference.h5ad")


def run_spots(n: int, devices: int, *, store: str) -> dict:
    import anndata as ad

    from diffomics.spatial import deconvolve

    folder = Path(DATA_DIR)
    start = time.perf_counter()
    spatial = ad.read_h5ad(folder / "spots.h5ad", backed="r" if store == "backed" else None)
    reference = ad.read_h5ad(folder / "reference.h5ad")
    res = deconvolve(spatial, reference, "cell_type", likelihood="poisson", max_steps=200,
                     tol=0.0, progress=False,
                     chunk_size=SPOTS_CHUNK if store == "backed" else None)  # fmt: skip
    total = time.perf_counter() - start
    fitted = res.proportions.to_numpy()
    truth = spatial.obsm["proportions_true"].to_numpy()
    record = {
        "seconds": total,
        "fit_seconds": res.fit.compile_seconds + res.fit.fit_seconds,
        "chunks": res.params["n_chunks"],
        "steps": res.fit.n_steps,
        "rmse": float(np.sqrt(np.mean((fitted - truth) ** 2))),
        "dense_spots_mib": n * spatial.n_vars * 4 / 2**20,
    }
    memory = folder / "in_memory_proportions.npy"
    if store == "memory":
        np.save(memory, fitted)
    elif memory.exists():
        diff = np.abs(fitted - np.load(memory)).max(axis=1)  # per spot
        record["max_abs_diff_from_in_memory"] = float(diff.max())
        record["median_abs_diff_from_in_memory"] = float(np.median(diff))
        record["spots_differing_over_1e-4"] = int((diff > 1e-4).sum())
    return record


def _svg_data(n: int, n_genes: int = 100, n_spatial: int = 20):
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(SEED)
    xy = rng.uniform(0.0, 100.0, size=(n, 2))
    rate = np.full((n, n_genes), 5.0)
    for g in range(n_spatial):
        period = 20.0 + 2.0 * g
        rate[:, g] *= np.exp(0.8 * np.sin(2 * np.pi * xy[:, g % 2] / period))
    counts = rng.poisson(rate).astype(np.float32)
    adata = ad.AnnData(counts, obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))  # fmt: skip
    adata.obsm["spatial"] = xy
    return adata, n_spatial


def run_spatial_genes(n: int, devices: int) -> dict:
    from diffomics.spatial import spatial_genes

    adata, n_spatial = _svg_data(n)
    start = time.perf_counter()
    table = spatial_genes(adata, n_lengthscales=5, n_smoothed=0, n_inducing=500,
                          progress=False, mesh=_mesh(devices))  # fmt: skip
    total = time.perf_counter() - start
    q = table["qval"].to_numpy()
    return {
        "seconds": total,
        "planted_found": int((q[:n_spatial] < 0.05).sum()),
        "planted": n_spatial,
        "null_called": int((q[n_spatial:] < 0.05).sum()),
    }


def write_genes(folder: Path, n: int) -> None:
    """The out-of-core spatial-gene workload's spots: ``GENES_GENES`` genes, ``.h5ad``."""
    adata, _ = _svg_data(n, n_genes=GENES_GENES, n_spatial=GENES_SPATIAL)
    adata.write_h5ad(folder / "genes.h5ad")


def run_genes(n: int, devices: int, *, store: str) -> dict:
    import anndata as ad

    from diffomics.spatial import spatial_genes

    start = time.perf_counter()
    adata = ad.read_h5ad(Path(DATA_DIR) / "genes.h5ad",
                         backed="r" if store == "backed" else None)  # fmt: skip
    table = spatial_genes(adata, n_lengthscales=5, n_smoothed=0, n_inducing=500,
                          progress=False, mesh=_mesh(devices))  # fmt: skip
    q = table["qval"].to_numpy()
    return {
        "seconds": time.perf_counter() - start,
        "planted_found": int((q[:GENES_SPATIAL] < 0.05).sum()),
        "planted": GENES_SPATIAL,
        "null_called": int((q[GENES_SPATIAL:] < 0.05).sum()),
        "dense_counts_mib": n * GENES_GENES * 4 / 2**20,
    }


def run_integration(n: int, devices: int) -> dict:
    import anndata as ad
    import pandas as pd

    from diffomics.integration import integrate

    rng = np.random.default_rng(SEED)
    group = rng.integers(0, 2, n)
    latent = rng.normal(size=(n, 3)) + 2.0 * group[:, None]
    mods = {}
    for name, dim in (("rna", 20), ("atac", 30)):
        x = latent @ rng.normal(size=(3, dim)) + rng.normal(size=(n, dim))
        mods[name] = ad.AnnData(x.astype(np.float32),
                                obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))  # fmt: skip
    start = time.perf_counter()
    model = integrate(mods, likelihoods={"rna": "gaussian", "atac": "gaussian"},
                      max_epochs=3, batch_size=512, hidden_dim=64, progress=False,
                      mesh=_mesh(devices))  # fmt: skip
    return _integration_record(model, time.perf_counter() - start, "atac")


def _integration_record(model, seconds: float, other: str) -> dict:
    """Times of an `integrate` run and the FOSCTTM of RNA against `other` on 5,000 cells."""
    from diffomics.integration import foscttm

    n = len(model.cells)
    sample = np.random.default_rng(1).choice(n, size=min(n, 5000), replace=False)
    return {
        "seconds": seconds,
        "first_epoch_seconds": model.report["first_epoch_seconds"],
        "seconds_per_epoch": model.report["seconds_per_epoch"],
        "foscttm_5000_cells": float(foscttm(model.latent(["rna"])[sample],
                                            model.latent([other])[sample])),  # fmt: skip
    }


def write_counts(folder: Path, n: int) -> None:
    """RNA (sparse) and protein counts of `n` cells sharing a latent state, ``.h5ad`` and Zarr."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse

    rng = np.random.default_rng(SEED)
    group = rng.integers(0, 2, n)
    latent = rng.normal(size=(n, 3)) + 2.0 * group[:, None]  # what both modalities measure
    obs = pd.DataFrame({"group": group.astype(str)}, index=[f"c{i}" for i in range(n)])
    rate = np.exp(rng.normal(-3.5, 1.0, COUNTS_GENES))  # mean counts per gene: ~4% non-zero
    loading = rng.normal(0.0, 0.5, (3, COUNTS_GENES))
    parts = []
    for lo in range(0, n, 10_000):
        mean = rate * np.exp(latent[lo : lo + 10_000] @ loading)
        parts.append(scipy.sparse.csr_matrix(rng.poisson(mean).astype(np.float32)))
    level = rng.gamma(2.0, 20.0, COUNTS_PROTEINS)
    protein = rng.poisson(level * np.exp(latent @ rng.normal(0.0, 0.5, (3, COUNTS_PROTEINS))))
    for name, x in (("rna", scipy.sparse.vstack(parts).tocsr()),
                    ("protein", protein.astype(np.float32))):  # fmt: skip
        ad.AnnData(x, obs=obs).write_h5ad(folder / f"{name}.h5ad")
        ad.AnnData(x, obs=obs).write_zarr(folder / f"{name}.zarr")


def run_counts(n: int, devices: int, *, store: str) -> dict:
    import anndata as ad

    from diffomics.integration import integrate, open_zarr

    folder = Path(DATA_DIR)
    start = time.perf_counter()
    read = {"memory": ad.read_h5ad, "backed": lambda p: ad.read_h5ad(p, backed="r"),
            "zarr": lambda p: open_zarr(p.with_suffix(".zarr"))}[store]  # fmt: skip
    mods = {name: read(folder / f"{name}.h5ad") for name in ("rna", "protein")}
    model = integrate(mods, likelihoods={"rna": "nb", "protein": "nb"}, max_epochs=2,
                      batch_size=512, hidden_dim=64, progress=False,
                      mesh=_mesh(devices))  # fmt: skip
    record = _integration_record(model, time.perf_counter() - start, "protein")
    return {**record, "dense_rna_mib": n * COUNTS_GENES * 4 / 2**20}


def run_hic(n: int, devices: int) -> dict:
    import scipy.sparse

    from diffomics.hic import analyze

    rng = np.random.default_rng(SEED)
    n_diags = 100
    rows, cols, vals = [], [], []
    for d in range(n_diags + 1):
        i = np.arange(n - d)
        c = rng.poisson(200.0 / (1.0 + d), size=i.size)
        keep = c > 0
        rows.append(i[keep])
        cols.append(i[keep] + d)
        vals.append(c[keep])
    rows, cols, vals = (np.concatenate(a) for a in (rows, cols, vals))
    upper = scipy.sparse.coo_matrix((vals.astype(np.float64), (rows, cols)), shape=(n, n))
    matrix = (upper + scipy.sparse.triu(upper, 1).T).tocsr()  # symmetric
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ICE's "did not converge" (see the protocol)
        res = analyze(matrix, resolution=10_000, windows=(100_000,), n_eigs=0, loops=False,
                      progress=False, mesh=_mesh(devices))  # fmt: skip
    total = time.perf_counter() - start
    return {
        "seconds": total,
        "nnz": int(len(vals)),
        "masked_bins": int(np.isnan(res.weights).sum()),
        "boundaries": len(res.boundaries),
        "ice_iterations": int(res.report["ice_iterations"]),
    }


RUNNERS = {"deconvolution": run_deconvolution,
           "spots_in_memory": functools.partial(run_spots, store="memory"),
           "spots_backed": functools.partial(run_spots, store="backed"),
           "spatial_genes": run_spatial_genes,
           "genes_in_memory": functools.partial(run_genes, store="memory"),
           "genes_backed": functools.partial(run_genes, store="backed"),
           "integration": run_integration,
           "counts_in_memory": functools.partial(run_counts, store="memory"),
           "counts_backed": functools.partial(run_counts, store="backed"),
           "counts_zarr": functools.partial(run_counts, store="zarr"), "hic": run_hic}  # fmt: skip
# the files a workload family reads
WRITERS = {"counts": write_counts, "spots": write_spots, "genes": write_genes}
DATA_DIR = ""  # the folder of a writer's files (set by --data-dir in a child)


def child(args) -> None:
    global DATA_DIR
    DATA_DIR = args.data_dir or ""
    out = RUNNERS[args.workload](args.size, args.devices)
    Path(args.out).write_text(json.dumps(out))


def _table(results: list[dict]) -> str:
    lines = ["| workload | size | devices | wall s (child) | peak RSS MiB | time | accuracy |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        o = r.get("result") or {}
        if r["workload"].startswith("spots"):
            t = f"{o.get('seconds', float('nan')):.1f} s ({o.get('chunks')} chunk(s), " \
                f"{o.get('steps')} steps)"
            acc = f"RMSE {o.get('rmse', float('nan')):.4f}"
            if "max_abs_diff_from_in_memory" in o:
                acc += f"; vs in memory: median {o['median_abs_diff_from_in_memory']:.0e}, " \
                       f"max {o['max_abs_diff_from_in_memory']:.0e}, " \
                       f"{o['spots_differing_over_1e-4']} spots > 1e-4"
        elif r["workload"] == "deconvolution":
            t = f"{o.get('seconds_per_step', float('nan')):.3f} s/step " \
                f"(first 50 steps {o.get('first_chunk_seconds', float('nan')):.1f} s)"
            acc = f"RMSE {o.get('rmse', float('nan')):.4f}"
        elif r["workload"] == "spatial_genes" or r["workload"].startswith("genes"):
            t = f"{o.get('seconds', float('nan')):.1f} s"
            acc = f"{o.get('planted_found')} of {o.get('planted')} planted; " \
                  f"{o.get('null_called')} null called"
        elif r["workload"] == "integration" or r["workload"].startswith("counts"):
            t = f"{o.get('seconds_per_epoch', float('nan')):.2f} s/epoch " \
                f"(first {o.get('first_epoch_seconds', float('nan')):.1f} s)"
            acc = f"FOSCTTM {o.get('foscttm_5000_cells', float('nan')):.3f}"
        else:
            t = f"{o.get('seconds', float('nan')):.1f} s"
            acc = f"{o.get('nnz', 0):,} pixels; {o.get('masked_bins')} masked bins; " \
                  f"{o.get('boundaries')} boundaries"
        status = "" if r["returncode"] == 0 else f" (exit {r['returncode']})"
        lines.append(f"| {r['workload']} | {r['size']:,} | {r['devices']} | "
                     f"{r['wall_seconds']:.1f}{status} | {r['peak_rss_mib']:.0f} | {t} | {acc} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the smallest size of each")
    parser.add_argument("--workloads", nargs="*", default=list(RUNNERS))
    parser.add_argument("--update", action="store_true",
                        help="rerun only --workloads; keep the other rows of the last run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = QUICK if args.quick else SIZES
    results, kept = [], []
    previous = RESULTS_DIR / f"{NAME}.json"
    if args.update and previous.exists():
        kept = [r for r in json.loads(previous.read_text())["results"]
                if r["workload"] not in args.workloads]  # fmt: skip
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            for size in sizes[workload]:
                family = workload.split("_")[0]
                data = Path(tmp) / f"{family}_{size}"
                if family in WRITERS and not data.exists():
                    data.mkdir()
                    WRITERS[family](data, size)  # here: the children's memory is theirs
                for devices in DEVICES[workload]:
                    out = Path(tmp) / f"{workload}_{size}_{devices}.json"
                    cmd = [sys.executable, __file__, "--child", "--workload", workload,
                           "--size", str(size), "--devices", str(devices), "--out", str(out),
                           "--data-dir", str(data)]  # fmt: skip
                    flag = f"--xla_force_host_platform_device_count={devices}"
                    print(f"{workload} n={size:,} devices={devices}", flush=True)
                    info = run_child(cmd, threads=args.threads, extra_xla_flags=flag)
                    info.update(workload=workload, size=size, devices=devices,
                                result=json.loads(out.read_text()) if out.exists() else None)
                    print(f"  {info['wall_seconds']:.1f} s, {info['peak_rss_mib']:.0f} MiB, "
                          f"{info['result']}", flush=True)
                    results.append(info)
    order = list(RUNNERS)
    results = sorted(kept + results, key=lambda r: (order.index(r["workload"]), r["size"],
                                                    r["devices"]))  # fmt: skip
    payload = {
        "command": "make bench-scale" + (" (--quick)" if args.quick else "")
        + (f" (--update --workloads {' '.join(args.workloads)})" if kept else ""),
        "threads": args.threads,
        "machine": machine(),
        "protocol": __doc__,
        "results": results,
        "total_seconds": time.perf_counter() - began,
    }
    markdown = "\n".join([
        "# Scaling: time and peak memory against data size, 1 and 4 devices",
        "",
        f"Command: `{payload['command']}`; {args.threads} thread(s), pinned; "
        f"{payload['machine']['date']}; total {payload['total_seconds'] / 60:.1f} min. "
        "The 4 devices are simulated on the same CPU cores "
        "(`--xla_force_host_platform_device_count=4`): they show the partitioned program "
        "runs and agrees, not a speed-up. Peak RSS is the child process's (host memory, "
        "which on a CPU is also the devices').",
        "",
        _table(results),
        "",
    ])  # fmt: skip
    for path in write_results(NAME, payload, markdown):
        print(path)


if __name__ == "__main__":
    main()
