"""One process of a multi-process run on CPU, for `test_distributed.py`.

Not collected by pytest (no ``test_`` prefix). `test_distributed.py` starts it as every
process of a run (``--processes 2``: two processes, two simulated devices each, joined by
``jax.distributed.initialize`` on localhost, the CPU collectives going over Gloo) and as a
single reference process with four devices (``--processes 1``). Each process writes what
it saw to ``--out``:

- ``reads_<rank>.json``: the cells each process read to place one minibatch of 7 cells
  (padded to 8) on the 4-device mesh;
- ``latent_<rank>.npy`` and ``history_<rank>.npy``: `integrate` on 210 SNARE-seq cells,
  streamed from backed ``.h5ad`` files in ``--data``, on a mesh over all 4 devices;
- ``proportions_<rank>.npy`` and ``loss_<rank>.npy``: `deconvolve` (NB, background) of 79
  seqFISH+ pseudo-spots, split over the same mesh, 100 Adam steps; ``chunked_<rank>.npy``:
  the same spots (NB, no background) fitted in chunks of 30, each split over the mesh;
  ``spot_reads_<rank>.json``: the ``(start, stop)`` of every read of spots in both fits;
  ``errors_<rank>.json``: what each process raised for a NaN in cell 200 (`integrate`) and
  a negative count in spot 77 (`deconvolve`);
- ``svg_<rank>.npy``: `spatial_genes` of 150 genes of the mouse olfactory bulb, the genes
  split over the mesh (LLR, FSV, p-value);
- ``hic_<rank>.npz``: `hic.analyze` of GM12878 chr20 at 25 kb (balancing and expected from
  pixels split over the mesh, dots on tiles one per device);
- ``regions_<rank>.npz``: `hic.analyze` of 8 mouse chromosomes at 10 Mb (cooler's test
  map), balanced over the mesh, then each chromosome analysed whole on one device (with two
  processes, each analyses those of its devices and the results are exchanged).
"""

import argparse
import json
from pathlib import Path

import anndata as ad
import jax
import numpy as np

from diffomics.core import data_mesh
from diffomics.datasets import gm12878_hic, mouse_olfactory_bulb, seqfish_cortex
from diffomics.hic import analyze
from diffomics.integration import integrate
from diffomics.integration._integrate import _place
from diffomics.spatial import _analyses as analyses
from diffomics.spatial import deconvolve, pool_pseudo_spots, spatial_genes


class Spy:
    """A modality matrix that records the cells read from it."""

    def __init__(self, x):
        self.x, self.shape, self.reads = x, x.shape, []

    def __getitem__(self, rows):
        self.reads.extend(np.asarray(rows).tolist())
        return self.x[rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.processes > 1:
        jax.distributed.initialize(f"localhost:{args.port}", args.processes, args.rank,
                                   initialization_timeout=120)  # fmt: skip
    assert jax.device_count() == 4, jax.devices()

    mesh = data_mesh()
    spy = Spy(np.arange(20.0).reshape(10, 2))
    inputs = {"rna_counts": spy, "rna_mask": np.ones(10)}
    placed, _ = _place(inputs, np.array([9, 0, 4, 2, 7, 1, 5]), ["rna"], mesh)
    assert placed["rna_counts"].shape == (8, 2)
    (args.out / f"reads_{args.rank}.json").write_text(json.dumps(sorted(spy.reads)))

    mods = {name: ad.read_h5ad(args.data / f"{name}.h5ad", backed="r")
            for name in ("rna", "atac")}  # fmt: skip
    model = integrate(mods, likelihoods={"rna": "gaussian", "atac": "gaussian"}, max_epochs=2,
                      batch_size=50, hidden_dim=16, n_layers=1, progress=False,
                      mesh=mesh)  # fmt: skip
    columns = ["train_loss", "validation_loss", "validation_reconstruction_loss"]
    np.save(args.out / f"history_{args.rank}.npy", model.history[columns].to_numpy())
    np.save(args.out / f"latent_{args.rank}.npy", model.latent())
    errors = []
    bad = {name: adata.to_memory() for name, adata in mods.items()}
    bad["rna"].X[200, 0] = np.nan  # a cell of the second process's block of checks
    try:
        integrate(bad, likelihoods={"rna": "gaussian", "atac": "gaussian"}, max_epochs=1,
                  progress=False, mesh=mesh)  # fmt: skip
    except ValueError as e:
        errors.append([type(e).__name__, str(e)])

    cells, reference = seqfish_cortex()
    spots = pool_pseudo_spots(cells, "cell_type", spot_size=500.0)
    spot_reads = []
    spot_reader = analyses._spot_reader

    def spied_reader(*args, **kwargs):  # records the (start, stop) of every read of spots
        read = spot_reader(*args, **kwargs)
        return lambda start, stop: spot_reads.append([int(start), int(stop)]) or read(start, stop)

    analyses._spot_reader = spied_reader
    result = deconvolve(spots, reference, "cell_type", likelihood="nb", background=True,
                        max_steps=100, progress=False, mesh=mesh)  # fmt: skip
    np.save(args.out / f"proportions_{args.rank}.npy", result.proportions.to_numpy())
    np.save(args.out / f"loss_{args.rank}.npy", result.fit.history)
    chunked = deconvolve(spots, reference, "cell_type", likelihood="nb", chunk_size=30,
                         max_steps=100, progress=False, mesh=mesh)  # fmt: skip
    np.save(args.out / f"chunked_{args.rank}.npy", chunked.proportions.to_numpy())
    (args.out / f"spot_reads_{args.rank}.json").write_text(json.dumps(spot_reads))
    bad = spots.copy()
    bad.X[77] = -1.0  # a spot of the second process's devices
    try:
        deconvolve(bad, reference, "cell_type", chunk_size=30, max_steps=1, progress=False,
                   mesh=mesh)  # fmt: skip
    except ValueError as e:
        errors.append([type(e).__name__, str(e)])
    (args.out / f"errors_{args.rank}.json").write_text(json.dumps(errors))

    bulb = mouse_olfactory_bulb()[:, :150].copy()
    table = spatial_genes(bulb, n_lengthscales=4, n_smoothed=0, progress=False, mesh=mesh)
    np.save(args.out / f"svg_{args.rank}.npy", table[["llr", "fsv", "pval"]].to_numpy())

    hic = analyze(gm12878_hic("chr20"), windows=(250_000,), n_eigs=0, progress=False,
                  mesh=mesh)  # fmt: skip
    np.savez(args.out / f"hic_{args.rank}.npz", weights=hic.weights,
             expected=hic.expected["balanced.avg"].to_numpy(),
             loops=hic.loops[["start1", "start2"]].to_numpy())  # fmt: skip

    cool = Path(__file__).parents[1] / "data" / "hic" / "CN.mm9.10000kb.cool"
    chroms = [f"chr{k}" for k in range(1, 9)]
    genome = analyze(cool, region=chroms, windows=(30_000_000,), loops=False, progress=False,
                     mesh=mesh)  # fmt: skip
    np.savez(args.out / f"regions_{args.rank}.npz", weights=genome.weights,
             e1=genome.compartments["E1"].to_numpy(float),
             insulation=genome.insulation["log2_insulation_score_30000000"].to_numpy(float),
             boundaries=genome.boundaries["start"].to_numpy(),
             devices=[genome.regions[c].report["device"] for c in chroms])  # fmt: skip


if __name__ == "__main__":
    main()
