"""Readers of the small real datasets bundled with diffomics (files in ``datasets/data``)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from diffomics.core._errors import DataIntegrityError, MissingKeyError
from diffomics.datasets._registry import DATASETS, verify_checksums

__all__ = [
    "eccite_pbmc500",
    "gm12878_annotations",
    "gm12878_hic",
    "mouse_olfactory_bulb",
    "osmfish",
    "provenance",
    "seqfish_cortex",
    "snareseq_celllines",
]


def _read_gene_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a headerless genes x cells table (gene name in column 0) as cells x genes."""
    table = pd.read_csv(path, sep="\t", header=None, index_col=0)
    return table.index.astype(str).tolist(), table.to_numpy(np.float32).T


def _read_seqfish_cortex(folder: Path) -> tuple[ad.AnnData, ad.AnnData]:
    """Read the Zhu 2018 seqFISH cortex cells and the matched Tasic 2016 scRNA-seq reference.

    Args:
      folder: directory with the files listed in its ``SOURCE.md``.

    Returns:
      ``(spatial, reference)``. ``spatial``: 1,597 cells x 113 genes, ``X`` on the
      cross-platform normalised 0-101 scale (float32, not counts), ``obs["cell_type"]``,
      ``obs["domain"]`` (HMRF spatial domain), ``obsm["spatial"]`` (x, y in image units).
      ``reference``: 1,723 cells x the same genes, same scale, ``obs["cell_type"]`` and
      ``obs["layer"]`` (dissection tag).
    """
    genes, x = _read_gene_matrix(folder / "seqfish_cortex_b2_testing.txt.gz")
    labels = pd.read_csv(folder / "seqfish_labels.tsv", sep="\t", header=None)
    coords = pd.read_csv(folder / "fcortex.coordinates.txt", sep=" ", header=None)
    ref_genes, ref_x = _read_gene_matrix(folder / "tasic_training_b2.txt.gz")
    ref_labels = pd.read_csv(folder / "tasic_labels.tsv", sep="\t", header=None)
    if ref_genes != genes or len(labels) != x.shape[0] or len(ref_labels) != ref_x.shape[0]:
        msg = f"{folder}: seqFISH and Tasic tables disagree on genes or cell counts."
        raise DataIntegrityError(msg)
    names = [f"cell_{i}" for i in labels[0]]
    spatial = ad.AnnData(
        x,
        obs=pd.DataFrame(
            {"cell_type": labels[2].to_numpy(), "domain": labels[1].astype(str).to_numpy()},
            index=names,
        ),
        var=pd.DataFrame(index=genes),
    )
    spatial.obsm["spatial"] = coords[[2, 3]].to_numpy(np.float64)
    reference = ad.AnnData(
        ref_x,
        obs=pd.DataFrame(
            {"cell_type": ref_labels[0].to_numpy(), "layer": ref_labels[2].to_numpy()},
            index=ref_labels[1].astype(str).to_numpy(),
        ),
        var=pd.DataFrame(index=genes),
    )
    return spatial, reference


def _read_osmfish(folder: Path) -> ad.AnnData:
    """Read the Codeluppi 2018 osmFISH somatosensory cortex cells with their clusters.

    Cells the authors marked ``Excluded`` are left out; their number is recorded in
    ``uns["n_cells_excluded"]``.

    Args:
      folder: directory with the files listed in its ``SOURCE.md``.

    Returns:
      AnnData, 4,839 cells x 33 genes, ``X`` raw molecule counts (float32),
      ``obs["cell_type"]`` (ClusterName), ``obs["region"]``, ``obsm["spatial"]`` (pixels).
    """
    expr = pd.read_csv(folder / "osmFISH_prep_expression.txt.gz", sep="\t")
    coords = pd.read_csv(folder / "osmFISH_prep_cell_coordinates.txt.gz", sep="\t", index_col=0)
    meta = pd.read_csv(folder / "osmFISH_prep_cell_metadata.txt.gz", sep="\t", index_col=0)
    cells = expr.columns.astype(str)
    missing = cells.difference(meta.index)
    if len(missing):
        msg = f"{folder}: {len(missing)} cells with expression have no metadata."
        raise DataIntegrityError(msg)
    meta, coords = meta.loc[cells], coords.loc[cells]
    keep = (meta["ClusterName"] != "Excluded").to_numpy()
    adata = ad.AnnData(
        expr.to_numpy(np.float32).T[keep],
        obs=pd.DataFrame(
            {
                "cell_type": meta["ClusterName"].to_numpy()[keep],
                "region": meta["Region"].to_numpy()[keep],
            },
            index=cells[keep],
        ),
        var=pd.DataFrame(index=expr.index.astype(str)),
    )
    adata.obsm["spatial"] = coords[["X", "Y"]].to_numpy(np.float64)[keep]
    adata.uns["n_cells_excluded"] = int((~keep).sum())
    return adata


def provenance(name: str, folder: Path | None = None, *, verify: bool = True) -> dict:
    """Provenance record of a bundled dataset, with the sha256 of each file.

    Args:
      name: a key of `diffomics.datasets.DATASETS`.
      folder: where the files are; None uses the copy inside the package.
      verify: check each file against the committed ``SHA256SUMS`` manifest.

    Returns:
      Dict with ``dataset_name``, ``title``, ``publications``, ``origin``, ``license``,
      ``modalities``, ``value_scale``, ``source_path`` and ``sha256`` (file name -> digest).

    Raises:
      DataIntegrityError: a file is missing or its digest differs from the manifest.

    Examples:
      >>> provenance("osmfish_sscortex_codeluppi2018")["modalities"]
      ['rna', 'spatial']
    """
    info = DATASETS[name]
    folder = info.folder if folder is None else Path(folder)
    digests = verify_checksums(folder) if verify else {}
    return {
        "dataset_name": info.name,
        "title": info.title,
        "publications": list(info.publications),
        "origin": info.origin,
        "license": info.license,
        "modalities": list(info.modalities),
        "value_scale": info.value_scale,
        "source_path": str(folder),
        "sha256": digests,
    }


def seqfish_cortex(
    folder: Path | None = None, *, verify: bool = True
) -> tuple[ad.AnnData, ad.AnnData]:
    """The Zhu 2018 seqFISH cortex cells and the matched Tasic 2016 scRNA-seq reference.

    Both hold the same 113 genes on one cross-platform normalised 0-101 scale (not counts).
    Each AnnData records the dataset's provenance in ``uns["provenance"]``.

    Args:
      folder: folder with the files; None uses the copy bundled with diffomics.
      verify: check file checksums first.

    Returns:
      ``(spatial, reference)``. ``spatial``: 1,597 cells x 113 genes, ``X`` float32 on the
      0-101 scale, ``obs["cell_type"]`` (8 classes), ``obs["domain"]`` (HMRF spatial domain),
      ``obsm["spatial"]`` (x, y in image units, float64). ``reference``: 1,723 cells x the
      same genes, ``obs["cell_type"]`` and ``obs["layer"]`` (dissection tag).

    Examples:
      >>> spatial, reference = seqfish_cortex()
      >>> spatial.shape, reference.shape
      ((1597, 113), (1723, 113))
    """
    name = "seqfish_cortex_zhu2018"
    record = provenance(name, folder, verify=verify)
    spatial, reference = _read_seqfish_cortex(Path(record["source_path"]))
    spatial.uns["provenance"] = record
    reference.uns["provenance"] = record
    return spatial, reference


def osmfish(folder: Path | None = None, *, verify: bool = True) -> ad.AnnData:
    """The Codeluppi 2018 osmFISH somatosensory cortex cells (raw molecule counts).

    Args:
      folder: folder with the files; None uses the copy bundled with diffomics.
      verify: check file checksums first.

    Returns:
      AnnData, 4,839 cells x 33 genes; see `_read_osmfish` for the fields. Provenance in
      ``uns["provenance"]``; the number of cells the authors excluded in
      ``uns["n_cells_excluded"]``.

    Examples:
      >>> osmfish().shape
      (4839, 33)
    """
    name = "osmfish_sscortex_codeluppi2018"
    record = provenance(name, folder, verify=verify)
    adata = _read_osmfish(Path(record["source_path"]))
    adata.uns["provenance"] = record
    return adata


def mouse_olfactory_bulb(folder: Path | None = None, *, verify: bool = True) -> ad.AnnData:
    """The Stahl 2016 mouse olfactory bulb ST section (replicate 11), SpatialDE's benchmark.

    Args:
      folder: folder with the files; None uses the copy bundled with diffomics.
      verify: check file checksums first.

    Returns:
      AnnData, 260 spots x 16,218 genes, ``X`` raw UMI counts (float32),
      ``obs["total_counts"]`` (SpatialDE's total over genes with >= 3 counts),
      ``obsm["spatial"]`` (array coordinates x, y; spots are about 1 unit apart) and the
      provenance in ``uns["provenance"]``.

    Examples:
      >>> mouse_olfactory_bulb().shape
      (260, 16218)
    """
    record = provenance("spatialde_mob_stahl2016", folder, verify=verify)
    base = Path(record["source_path"])
    counts = pd.read_csv(base / "Rep11_MOB_count_matrix-1.tsv.gz", sep="\t", index_col=0)
    info = pd.read_csv(base / "MOB_sample_info.csv", index_col=0)
    missing = info.index.difference(counts.index)
    if len(missing):
        msg = f"{base}: {len(missing)} spots of MOB_sample_info.csv have no counts."
        raise DataIntegrityError(msg)
    counts = counts.loc[info.index]
    adata = ad.AnnData(
        counts.to_numpy(np.float32),
        obs=pd.DataFrame(
            {"total_counts": info["total_counts"].to_numpy(np.float64)},
            index=info.index.astype(str),
        ),
        var=pd.DataFrame(index=counts.columns.astype(str)),
    )
    adata.obsm["spatial"] = info[["x", "y"]].to_numpy(np.float64)
    adata.uns["provenance"] = record
    return adata


_HIC_MAPS = {"chr20": "GM12878_chr20_25kb_rep.cool", "chr22": "GM12878_chr22_50kb_prim.cool"}


def gm12878_hic(chrom: str = "chr20", folder: Path | None = None, *, verify: bool = True) -> str:
    """Path of a bundled GM12878 Hi-C map (Rao et al. 2014), raw counts, no weights.

    Args:
      chrom: ``"chr20"`` (25 kb bins, 2,522 bins) or ``"chr22"`` (50 kb, 1,027 bins).
      folder: folder with the files; None uses the copy bundled with diffomics.
      verify: check file checksums first.

    Returns:
      The `.cool` path, for `diffomics.hic.analyze` or `cooler.Cooler`.

    Examples:
      >>> from diffomics.hic import read_cool
      >>> read_cool(gm12878_hic("chr22")).n_bins
      1027
    """
    if chrom not in _HIC_MAPS:
        msg = f"chrom must be one of {sorted(_HIC_MAPS)}; found {chrom!r}."
        raise MissingKeyError(msg)
    record = provenance("hic_gm12878_rao2014", folder, verify=verify)
    return str(Path(record["source_path"]) / _HIC_MAPS[chrom])


def gm12878_annotations(folder: Path | None = None, *, verify: bool = True) -> dict:
    """Published calls for the bundled GM12878 maps (chr20 and chr22, hg19).

    Args:
      folder: folder with the files; None uses the copy bundled with diffomics.
      verify: check file checksums first.

    Returns:
      dict of DataFrames: ``"domains"`` (Arrowhead, ``chrom, start, end``), ``"loops"``
      (HiCCUPS, ``chrom1, x1, x2, chrom2, y1, y2``) and ``"ctcf"`` (CTCF ChIP-seq peaks,
      all chromosomes, ``chrom, start, end, ..., summit``).
    """
    record = provenance("hic_gm12878_rao2014", folder, verify=verify)
    base = Path(record["source_path"])
    domains = pd.read_csv(base / "arrowhead_gm12878_5kb_domains_chr20_chr22.bed", sep="\t",
                          header=None, names=["chrom", "start", "end"])  # fmt: skip
    loops = pd.read_csv(base / "GM12878_HiCCUPS_looplist_chr20_chr22.bedpe", sep="\t")
    ctcf = pd.read_csv(
        base / "GM12878_CTCF_peaks_Zufferey2018.bed.gz",
        sep="\t",
        header=None,
        names=["chrom", "start", "end", "name", "score", "strand", "signal", "p", "q", "summit"],
    )
    return {"domains": domains, "loops": loops, "ctcf": ctcf}


def eccite_pbmc500(folder: Path | None = None, *, verify: bool = True) -> dict:
    """ECCITE-seq PBMC (Mimitou 2019), 500 cells with paired RNA and protein counts.

    Args:
      folder: folder with the files; None uses the copy bundled with diffomics.
      verify: check file checksums first.

    Returns:
      ``{"rna": AnnData (500 x 19,521), "protein": AnnData (500 x 49)}``, raw counts in
      ``X`` (float32), the same ``obs_names`` (barcodes), ``obs["hashtag"]`` (the argmax
      hashtag) and the provenance in ``uns["provenance"]``.

    Examples:
      >>> d = eccite_pbmc500()
      >>> d["rna"].shape, d["protein"].shape
      ((500, 19521), (500, 49))
    """
    import scipy.io

    record = provenance("eccite_pbmc500_mimitou2019", folder, verify=verify)
    base = Path(record["source_path"])
    barcodes = pd.read_csv(base / "barcodes.tsv", header=None)[0].astype(str).to_numpy()
    genes = pd.read_csv(base / "rna_genes.tsv", header=None)[0].astype(str).rename(None)
    rna = scipy.io.mmread(base / "rna_counts.mtx.gz").tocsr().T.astype(np.float32)
    adt = pd.read_csv(base / "adt_counts.csv.gz", index_col=0)
    hto = pd.read_csv(base / "hto_counts.csv", index_col=0)
    if list(adt.columns) != list(barcodes) or list(hto.columns) != list(barcodes):
        msg = f"{base}: the modalities list their cells in different orders."
        raise DataIntegrityError(msg)
    obs = pd.DataFrame({"hashtag": hto.idxmax(axis=0).to_numpy()}, index=barcodes)
    out = {
        "rna": ad.AnnData(rna, obs=obs.copy(),
                          var=pd.DataFrame(index=genes.str.removeprefix("hg19_"))),
        "protein": ad.AnnData(adt.T.to_numpy(np.float32), obs=obs.copy(),
                              var=pd.DataFrame(index=adt.index.astype(str))),
    }  # fmt: skip
    out["rna"].var_names_make_unique()
    for adata in out.values():
        adata.uns["provenance"] = record
    return out


def snareseq_celllines(folder: Path | None = None, *, verify: bool = True) -> dict:
    """SNARE-seq cell lines (Chen 2019) as SCOT's paired RNA and ATAC features.

    Args:
      folder: folder with the files; None uses the copy bundled with diffomics.
      verify: check file checksums first.

    Returns:
      ``{"rna": AnnData (1,047 x 10), "atac": AnnData (1,047 x 19)}`` with features (not
      counts: use a Gaussian likelihood), ``obs["cell_line"]`` and the provenance.

    Examples:
      >>> d = snareseq_celllines()
      >>> d["atac"].shape, sorted(d["rna"].obs["cell_line"].unique())
      ((1047, 19), ['BJ', 'GM', 'H1', 'K562'])
    """
    record = provenance("snareseq_celllines_chen2019", folder, verify=verify)
    base = Path(record["source_path"])
    meta = pd.read_csv(base / "SNAREseq_metadata.txt", sep="\t")
    obs = pd.DataFrame({"cell_line": meta["CellType"].astype(str).to_numpy()},
                       index=meta["Barcode"].astype(str).to_numpy())  # fmt: skip
    out = {}
    for name in ("rna", "atac"):
        x = np.load(base / f"SNAREseq_{name}_feat.npy").astype(np.float32)
        var = pd.DataFrame(index=[f"{name}_feature_{i}" for i in range(x.shape[1])])
        out[name] = ad.AnnData(x, obs=obs.copy(), var=var)
        out[name].uns["provenance"] = record
    return out
