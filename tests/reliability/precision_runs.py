"""Every analysis on bundled real data, for the float32 / float64 comparison.

`test_precision.py` calls `run()` in its own process (float32, JAX's default) and runs this
file as a script in a fresh process with ``JAX_ENABLE_X64=1``, where diffomics computes in
float64 (`diffomics.core.default_float`):

    JAX_ENABLE_X64=1 python tests/reliability/precision_runs.py OUT.npz

Runs: `deconvolve` (NB) on seqFISH cortex pseudo-spots; `spatial_genes` on the 150 most
often detected genes of the mouse olfactory bulb; `hic.analyze` of GM12878 chr22 at 50 kb
(balancing, expected, compartments phased by CTCF sites, insulation and boundaries);
`integrate` of 400 SNARE-seq cells for 15 epochs. The settings are fixed here so that both
processes run the same thing.
"""

import sys

import numpy as np


def run() -> dict[str, np.ndarray]:
    """The analyses' outputs (and the float dtype they computed in) as named arrays."""
    from diffomics.core import default_float
    from diffomics.datasets import (
        gm12878_annotations,
        gm12878_hic,
        mouse_olfactory_bulb,
        seqfish_cortex,
        snareseq_celllines,
    )
    from diffomics.hic import analyze, count_features, read_cool
    from diffomics.integration import foscttm, integrate
    from diffomics.spatial import deconvolve, pool_pseudo_spots, spatial_genes

    out = {"dtype": np.asarray(str(np.dtype(default_float())))}

    cells, reference = seqfish_cortex()
    spots = pool_pseudo_spots(cells, "cell_type", spot_size=500.0)
    result = deconvolve(spots, reference, "cell_type", likelihood="nb", max_steps=300,
                        progress=False)  # fmt: skip
    out["deconvolve_param_dtype"] = np.asarray(str(result.model.logits[...].dtype))
    out["deconvolve_proportions"] = result.proportions.to_numpy()

    mob = mouse_olfactory_bulb()
    detected = np.asarray((mob.X > 0).sum(axis=0)).ravel()
    mob = mob[:, np.sort(np.argsort(-detected, kind="stable")[:150])].copy()
    table = spatial_genes(mob, n_smoothed=0, progress=False)
    for column in ("llr", "fsv", "pval", "qval", "lengthscale"):
        out[f"svg_{column}"] = table[column].to_numpy(np.float64)
    out["svg_is_spatial"] = table["is_spatial"].to_numpy(bool)

    path = gm12878_hic("chr22")
    ctcf = gm12878_annotations()["ctcf"].assign(summit_pos=lambda t: t["start"] + t["summit"])
    track = count_features(ctcf, read_cool(path).bins, position="summit_pos")
    hic = analyze(path, phasing_track=track, loops=False)
    out["hic_weights"] = hic.weights
    out["hic_expected"] = hic.expected["balanced.avg"].to_numpy(np.float64)
    out["hic_E1"] = hic.compartments["E1"].to_numpy(np.float64)
    windows = [c for c in hic.insulation if c.startswith("log2_insulation_score_")]
    out["hic_insulation"] = hic.insulation[windows].to_numpy(np.float64)
    boundary = [c for c in hic.insulation if c.startswith("is_boundary_")]
    out["hic_is_boundary"] = hic.insulation[boundary].to_numpy(bool)

    snare = {k: v[:400].copy() for k, v in snareseq_celllines().items()}
    model = integrate(snare, likelihoods={"rna": "gaussian", "atac": "gaussian"},
                      max_epochs=15, hidden_dim=32, progress=False)  # fmt: skip
    out["vae_history"] = model.history[["train_loss", "validation_loss"]].to_numpy()
    out["vae_foscttm"] = np.asarray(foscttm(model.latent(["rna"]), model.latent(["atac"])))
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **run())
