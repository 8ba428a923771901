"""cooltools 0.7.1's clustering of enriched pixels (scikit-learn Birch) on GM12878 chr20, 25 kb.

Run in the benchmark environment:

    .venv-bench/bin/python tests/_scripts/hic_birch_reference.py

``cooltools.dots(clr, expected, expected_value_col="balanced.avg", clustering_radius=None)``
on ``GM12878_chr20_25kb_rep.cool`` (balanced by ``cooler.balance_cooler(cis_only=True)``,
expected by ``expected_cis(ignore_diags=2, smooth=False, aggregate_smoothed=False)``) returns
the pixels that pass every kernel's lambda-bin FDR, before clustering. They are sorted by
``(start1, start2)`` as cooltools sorts them, then clustered as cooltools' ``dots`` does
(``clust_2D_pixels``: ``sklearn.cluster.Birch(n_clusters=None, threshold=20_000)`` on
``start1, start2``).

Writes tests/data/hic/cooltools_chr20_25kb_enriched_pixels.tsv.gz (gzip with mtime 0):
``start1, start2, count, c_label`` (Birch label of each pixel).
"""

import logging
import shutil
import tempfile
from pathlib import Path

import cooler
import cooltools
import sklearn
from cooltools.api.dotfinder import clust_2D_pixels

logging.getLogger().setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[2]
DATA = (REPO / ".." / "shared" / "data" / "hic_gm12878").resolve()
if not DATA.exists():
    DATA = Path("/work/shared/data/hic_gm12878")
OUT = REPO / "tests" / "data" / "hic" / "cooltools_chr20_25kb_enriched_pixels.tsv.gz"
RADIUS = 20_000


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chr20.cool"
        shutil.copyfile(DATA / "GM12878_chr20_25kb_rep.cool", path)
        clr = cooler.Cooler(str(path))
        cooler.balance_cooler(clr, cis_only=True, store=True)
        clr = cooler.Cooler(str(path))
        expected = cooltools.expected_cis(clr, ignore_diags=2, smooth=False,
                                          aggregate_smoothed=False)  # fmt: skip
        pixels = cooltools.dots(clr, expected=expected, expected_value_col="balanced.avg",
                                clustering_radius=None)  # fmt: skip
    pixels = pixels.sort_values(["start1", "start2"]).reset_index(drop=True)
    labels = clust_2D_pixels(pixels, threshold_cluster=RADIUS, bin1_id_name="start1",
                             bin2_id_name="start2")  # fmt: skip
    pixels["c_label"] = labels["c_label"]
    pixels[["start1", "start2", "count", "c_label"]].to_csv(
        OUT, sep="\t", index=False, compression={"method": "gzip", "mtime": 0}
    )
    print(f"{len(pixels)} pixels, {pixels['c_label'].nunique()} clusters "
          f"(cooltools {cooltools.__version__}, scikit-learn {sklearn.__version__})")  # fmt: skip


if __name__ == "__main__":
    main()
