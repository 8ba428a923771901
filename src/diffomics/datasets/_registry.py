"""What each bundled dataset is and where it came from (its provenance record)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from diffomics.core._errors import DataIntegrityError

__all__ = ["DATASETS", "DATA_DIR", "DatasetInfo", "sha256", "verify_checksums"]

#: Folder of the bundled datasets, one sub-folder per dataset with ``SOURCE.md`` and ``SHA256SUMS``.
DATA_DIR = Path(__file__).parent / "data"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Provenance of one bundled dataset.

    Attributes:
      name: short identifier, also the folder name under `DATA_DIR`.
      title: one-line description.
      publications: citations with DOIs of the papers that produced the data.
      origin: repository (and commit) or URL the bundled copies were taken from.
      license: licence of the copies.
      modalities: measured modalities, e.g. ``("rna", "spatial")``.
      value_scale: what the expression values are (``"counts"`` or a description of the
        normalisation), so likelihoods can be chosen honestly.
    """

    name: str
    title: str
    publications: tuple[str, ...]
    origin: str
    license: str
    modalities: tuple[str, ...]
    value_scale: str

    @property
    def folder(self) -> Path:
        """Folder holding the files (inside the installed package)."""
        return DATA_DIR / self.name


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="seqfish_cortex_zhu2018",
            title="seqFISH mouse visual cortex (1,597 cells, 113 genes) with its matched "
            "Tasic 2016 scRNA-seq reference (1,723 cells)",
            publications=(
                "Zhu, Shah, Dries, Cai & Yuan, 'Identification of spatially associated "
                "subpopulations by combining scRNAseq and sequential fluorescence in situ "
                "hybridization data', Nat. Biotechnol. 36:1183 (2018), "
                "https://doi.org/10.1038/nbt.4260",
                "Tasic et al., 'Adult mouse cortical cell taxonomy revealed by single cell "
                "transcriptomics', Nat. Neurosci. 19:335 (2016), "
                "https://doi.org/10.1038/nn.4216 (GEO GSE71585)",
            ),
            origin="https://github.com/singha53-zz/ssenet @b73f7e63, inst/extdata/",
            license="MIT (package); underlying data public",
            modalities=("rna", "spatial"),
            value_scale="cross-platform normalised (bias-corrected, quantile-normalised) "
            "values 0-101, not counts",
        ),
        DatasetInfo(
            name="osmfish_sscortex_codeluppi2018",
            title="osmFISH mouse somatosensory cortex (4,839 labelled cells, 33 genes)",
            publications=(
                "Codeluppi et al., 'Spatial organization of the somatosensory cortex revealed "
                "by osmFISH', Nat. Methods 15:932 (2018), "
                "https://doi.org/10.1038/s41592-018-0175-z",
            ),
            origin="https://github.com/drieslab/spatial-datasets @12a495fe, "
            "data/2018_osmFISH_SScortex/",
            license="MIT (c) 2019 Ruben Dries",
            modalities=("rna", "spatial"),
            value_scale="counts (molecules per cell)",
        ),
        DatasetInfo(
            name="spatialde_mob_stahl2016",
            title="Mouse olfactory bulb, Spatial Transcriptomics replicate 11 (260 spots, "
            "16,218 genes): the SpatialDE / SPARK benchmark",
            publications=(
                "Stahl et al., 'Visualization and analysis of gene expression in tissue "
                "sections by spatial transcriptomics', Science 353:78 (2016), "
                "https://doi.org/10.1126/science.aaf2403",
                "Svensson, Teichmann & Stegle, 'SpatialDE: identification of spatially "
                "variable genes', Nat. Methods 15:343 (2018), https://doi.org/10.1038/nmeth.4636",
            ),
            origin="https://github.com/almaan/sepal @9befea4b, compare/",
            license="MIT (sepal); underlying data public",
            modalities=("rna", "spatial"),
            value_scale="counts (UMIs per spot)",
        ),
        DatasetInfo(
            name="hic_gm12878_rao2014",
            title="GM12878 in situ Hi-C, chr20 at 25 kb and chr22 at 50 kb, with the published "
            "Arrowhead domains, HiCCUPS loops and CTCF peaks of those chromosomes",
            publications=(
                "Rao et al., 'A 3D map of the human genome at kilobase resolution reveals "
                "principles of chromatin looping', Cell 159:1665 (2014), "
                "https://doi.org/10.1016/j.cell.2014.11.021 (GEO GSE63525)",
                "Zufferey, Tavernari et al., 'Comparison of computational methods for the "
                "identification of topologically associating domains', Genome Biol. 19:217 "
                "(2018), https://doi.org/10.1186/s13059-018-1596-9 (CTCF peaks)",
            ),
            origin="dozmorovlab/SpectralTAD @06a1a756, dozmorovlab/TADCompare @0c0b5e2e, "
            "dozmorovlab/preciseTAD @4b718669, tidyomics/plyinteractions @42c3166f, "
            "CSOgroup/TAD-benchmarking-scripts @485cbd23 (see SOURCE.md)",
            license="MIT / Artistic-2.0 / Free Public License 1.0.0 (packages); data public",
            modalities=("hic",),
            value_scale="counts (read pairs per pixel)",
        ),
        DatasetInfo(
            name="eccite_pbmc500_mimitou2019",
            title="ECCITE-seq PBMC control sample, 500 cells: RNA (19,521 genes), 49 surface "
            "proteins (ADT) and 4 hashtags, raw counts",
            publications=(
                "Mimitou et al., 'Multiplexed detection of proteins, transcriptomes, clonotypes "
                "and CRISPR perturbations in single cells', Nat. Methods 16:409 (2019), "
                "https://doi.org/10.1038/s41592-019-0392-0 (GEO GSE126310)",
            ),
            origin="SydneyBioX/CiteFuse @b6075864, data/CITEseq_example.rda (see SOURCE.md)",
            license="GPL-3 (package); data public",
            modalities=("rna", "protein"),
            value_scale="counts (UMIs per cell)",
        ),
        DatasetInfo(
            name="snareseq_celllines_chen2019",
            title="SNARE-seq cell-line mixture (H1, GM12878, BJ, K562), 1,047 cells: paired "
            "RNA (10) and ATAC (19) preprocessed features",
            publications=(
                "Chen, Lake & Zhang, 'High-throughput sequencing of the transcriptome and "
                "chromatin accessibility in the same cell', Nat. Biotechnol. 37:1452 (2019), "
                "https://doi.org/10.1038/s41587-019-0290-0 (GEO GSE126074)",
            ),
            origin="rsinghlab/SCOT @14649be6, data/SNARE/",
            license="MIT (SCOT); data public",
            modalities=("rna", "atac"),
            value_scale="preprocessed low-dimensional features, not counts",
        ),
    )
}


def sha256(path: Path) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(folder: Path) -> dict[str, str]:
    """Check every file listed in ``folder/SHA256SUMS`` and return ``{file name: sha256}``.

    Raises:
      DataIntegrityError: the manifest is missing, a file is missing, or a digest differs.
    """
    manifest = folder / "SHA256SUMS"
    if not manifest.is_file():
        msg = f"{folder} has no SHA256SUMS manifest; the dataset folder is incomplete."
        raise DataIntegrityError(msg)
    found = {}
    for line in manifest.read_text().splitlines():
        expected, name = line.split()
        path = folder / name
        if not path.is_file():
            msg = f"{path} is listed in SHA256SUMS but missing; reinstall diffomics."
            raise DataIntegrityError(msg)
        digest = sha256(path)
        if digest != expected:
            msg = (
                f"{path} has sha256 {digest}, expected {expected}; the file was modified or "
                "truncated. Reinstall diffomics or restore the file."
            )
            raise DataIntegrityError(msg)
        found[name] = digest
    return found
