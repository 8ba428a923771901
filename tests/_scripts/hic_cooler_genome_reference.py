"""cooler 0.11.0 balancing of a whole-genome map, in its three modes (cis, genome-wide, trans).

Run in the benchmark environment:

    .venv-bench/bin/python tests/_scripts/hic_cooler_genome_reference.py

Input (copied into tests/data/hic/, 125 kB): ``CN.mm9.10000kb.cool`` from
../shared/data/hic_mouse_cortical_neurons/ (Bonev et al. 2017 mouse cortical neurons, mm9,
10 Mb bins, chr1..chr19, chrX, chrY, chrM; the cooltools test map, open2c/cooltools
``tests/data/CN.mm9.10000kb.cool``, MIT licence; see SOURCE.md there). Its own ``weight``
column is not used.

Writes to tests/data/hic/ (tab-separated, floats with 9 significant digits, gzip with mtime 0):
  cooler_cn_mm9_10mb_weights.tsv.gz  chrom, start, end and the weights of
                                     ``cooler.balance_cooler(clr, **kw)`` with cooler's
                                     defaults (ignore_diags=2, mad_max=5, min_nnz=10,
                                     min_count=0, tol=1e-5, max_iters=200) for kw in
                                     cis_only=True (column ``cis_only``), {} (``genome``) and
                                     trans_only=True (``trans_only``); NaN = masked
  cooler_cn_mm9_10mb_reference.json  versions, parameters, masked bins and convergence per mode
"""

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import cooler
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SOURCE = (REPO / ".." / "shared" / "data" / "hic_mouse_cortical_neurons").resolve()
if not SOURCE.exists():
    SOURCE = Path("/work/shared/data/hic_mouse_cortical_neurons")
OUT = REPO / "tests" / "data" / "hic"
NAME = "CN.mm9.10000kb.cool"
MODES = {"cis_only": {"cis_only": True}, "genome": {}, "trans_only": {"trans_only": True}}
DEFAULTS = dict(ignore_diags=2, mad_max=5, min_nnz=10, min_count=0, tol=1e-5, max_iters=200)


def main():
    shutil.copyfile(SOURCE / NAME, OUT / NAME)
    report = {
        "versions": {"cooler": cooler.__version__, "numpy": np.__version__},
        "input": f"tests/data/hic/{NAME} (copy of {SOURCE.name}/{NAME})",
        "parameters": DEFAULTS,
        "modes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / NAME
        shutil.copyfile(OUT / NAME, path)
        clr = cooler.Cooler(str(path))
        table = clr.bins()[:][["chrom", "start", "end"]]
        for column, kw in MODES.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # chrM: every bin masked
                weights, stats = cooler.balance_cooler(clr, **kw, **DEFAULTS)
            table[column] = weights
            report["modes"][column] = {
                "kwargs": kw,
                "n_masked": int(np.isnan(weights).sum()),
                "converged": bool(np.all(stats["converged"])),
            }
    table.to_csv(OUT / "cooler_cn_mm9_10mb_weights.tsv.gz", sep="\t", index=False,
                 float_format="%.9g", na_rep="NaN",
                 compression={"method": "gzip", "mtime": 0})  # fmt: skip
    (OUT / "cooler_cn_mm9_10mb_reference.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["modes"], indent=1))


if __name__ == "__main__":
    main()
