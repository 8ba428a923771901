"""Draw the guide's figures from the bundled real data into ``docs/images/``.

Each figure is made by the public analyses and plotting functions, with the settings of
``diffomics demo``, and saved as a small PNG (at most 300 kB, palette-quantised if needed).
Run from the repository root, in the project's environment::

    .venv/bin/python docs/_scripts/make_figures.py            # every figure (a few minutes)
    .venv/bin/python docs/_scripts/make_figures.py --only hic  # one of them
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

IMAGES = Path(__file__).resolve().parents[1] / "images"
MAX_BYTES = 300_000
SEED = 0


def save_png(fig, path: Path, *, dpi: int = 90) -> int:
    """Write `fig` as a PNG of at most `MAX_BYTES` (quantised to a palette when larger)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = buffer.getvalue()
    if len(data) > MAX_BYTES:
        image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256)
        buffer = io.BytesIO()
        image.save(buffer, format="png", optimize=True)
        data = buffer.getvalue()
    if len(data) > MAX_BYTES:
        msg = f"{path.name} is {len(data)} bytes even quantised; lower its dpi."
        raise ValueError(msg)
    path.write_bytes(data)
    return len(data)


def deconvolution(out: Path) -> Path:
    """Deconvolve seqFISH cortex pseudo-spots (250-unit grid), Gaussian likelihood, as the demo."""
    from diffomics.datasets import seqfish_cortex
    from diffomics.plotting import proportions_on_tissue
    from diffomics.spatial import deconvolve, pool_pseudo_spots

    cells, reference = seqfish_cortex()
    spots = pool_pseudo_spots(cells, "cell_type", spot_size=250.0)
    deconvolve(spots, reference, "cell_type", likelihood="gaussian", seed=SEED, progress=False)
    path = out / "deconvolution_seqfish.png"
    save_png(proportions_on_tissue(spots), path)
    return path


def spatial_genes(out: Path) -> Path:
    """Test the mouse olfactory bulb genes with at least 3 counts, as the demo."""
    from diffomics.datasets import mouse_olfactory_bulb
    from diffomics.plotting import spatial_genes_on_tissue
    from diffomics.spatial import spatial_genes as test_genes

    mob = mouse_olfactory_bulb()
    mob = mob[:, np.asarray(mob.X.sum(axis=0)).ravel() >= 3].copy()
    test_genes(mob, total_counts_key="total_counts", seed=SEED, progress=False)
    path = out / "spatial_genes_mob.png"
    save_png(spatial_genes_on_tissue(mob), path, dpi=80)
    return path


def hic(out: Path) -> Path:
    """Analyse GM12878 chr20 at 25 kb, phased by CTCF-peak density; draw 30 to 45 Mb."""
    from diffomics.datasets import gm12878_annotations, gm12878_hic
    from diffomics.hic import analyze, count_features, read_cool
    from diffomics.plotting import hic_tracks

    cmap = read_cool(gm12878_hic("chr20"))
    ctcf = gm12878_annotations()["ctcf"]
    ctcf = ctcf.assign(summit_position=ctcf["start"] + ctcf["summit"])
    track = count_features(ctcf, cmap.bins, position="summit_position")
    result = analyze(cmap, phasing_track=track)
    path = out / "hic_gm12878_chr20.png"
    save_png(hic_tracks(result, region=(30_000_000, 45_000_000)), path, dpi=80)
    return path


def integration(out: Path) -> Path:
    """Integrate SNARE-seq RNA and ATAC features with Gaussian likelihoods, as the demo."""
    from diffomics.datasets import snareseq_celllines
    from diffomics.integration import integrate
    from diffomics.plotting import latent_scatter

    data = snareseq_celllines()
    model = integrate(
        data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, seed=SEED, progress=False
    )
    labels = data["rna"].obs["cell_line"].to_numpy()
    fig = latent_scatter(model.latent(), labels, title="SNARE-seq joint latent (diffomics)")
    path = out / "integration_snareseq.png"
    save_png(fig, path)
    return path


FIGURES: dict[str, Callable[[Path], Path]] = {
    "deconvolution": deconvolution,
    "spatial_genes": spatial_genes,
    "hic": hic,
    "integration": integration,
}


def main() -> None:
    """Parse the arguments and draw the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(FIGURES), action="append",
                        help="draw only this figure (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=IMAGES, help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(FIGURES):
        start = time.perf_counter()
        path = FIGURES[name](args.out)
        took = time.perf_counter() - start
        print(f"{path} ({path.stat().st_size / 1000:.0f} kB, {took:.0f} s)")


if __name__ == "__main__":
    main()
