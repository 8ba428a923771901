"""Reference outputs of cooler 0.11.0 / cooltools 0.7.1 on two GM12878 Hi-C maps.

Run in the benchmark environment:

    .venv-bench/bin/python tests/_scripts/hic_cooltools_reference.py

Maps (read-only inputs in ../shared/data/hic_gm12878/, see SOURCE.md there):
  chr22_50kb = GM12878_chr22_50kb_prim.cool (Rao 2014 primary, chr22, 50 kb, raw counts)
  chr20_25kb = GM12878_chr20_25kb_rep.cool  (Rao 2014 replicate, chr20, 25 kb, raw counts)

Writes to tests/data/hic/ (tab-separated, floats with 7 significant digits, gzip with mtime 0):
  cooltools_<map>_weights.tsv.gz     cooler.balance_cooler(cis_only=True) weights, NaN = masked
  cooltools_<map>_expected.tsv.gz    cooltools.expected_cis(ignore_diags=2, smooth=True,
                                     aggregate_smoothed=True)
  <map>_ctcf_track.tsv.gz            CTCF peak summits per bin (summit = start + narrowPeak col 10)
  cooltools_<map>_eigs.tsv.gz        cooltools.eigs_cis(phasing_track=CTCF counts, n_eigs=3)
  cooltools_<map>_eigvals.tsv.gz     ... its eigenvalues
  cooltools_<map>_insulation.tsv.gz  cooltools.insulation(windows, ignore_diags=2,
                                     append_raw_scores=True)
  cooltools_chr20_25kb_dots.tsv.gz   cooltools.dots(expected, expected_value_col="balanced.avg")
  cooltools_reference.json           versions, parameters, timings, memory, counts, sanity checks,
                                     vs_published (HiCCUPS loop recall, Arrowhead boundary match)

Timing: each step runs once as a warm-up (numba compilation) under tracemalloc, which gives the
step's peak traced allocation (numpy buffers included), then once more, timed, without
tracemalloc. ru_maxrss is the process peak so far, recorded after each step. One thread.
"""

import os

for _v in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_v] = "1"

import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cooler  # noqa: E402
import cooltools  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy  # noqa: E402
import scipy.stats  # noqa: E402
from cooltools.api import dotfinder  # noqa: E402

logging.getLogger().setLevel(logging.WARNING)  # cooltools logs every tile at INFO

REPO = Path(__file__).resolve().parents[2]
DATA = (REPO / ".." / "shared" / "data" / "hic_gm12878").resolve()
if not DATA.exists():
    DATA = Path("/work/shared/data/hic_gm12878")
OUT = REPO / "tests" / "data" / "hic"
FLOAT = "%.7g"

MAPS = {
    "chr22_50kb": {"file": "GM12878_chr22_50kb_prim.cool", "window_bins": [3, 5, 10]},
    "chr20_25kb": {"file": "GM12878_chr20_25kb_rep.cool", "window_bins": [3, 5, 10, 20]},
}
BALANCE_KW = dict(
    cis_only=True, ignore_diags=2, mad_max=5, min_nnz=10, min_count=0, tol=1e-5, max_iters=200
)
EXPECTED_KW = dict(ignore_diags=2, smooth=True, aggregate_smoothed=True)
# eigs_cis: clip_percentile=99.9, ignore_diags=None -> read from the weight attrs (2)
EIGS_KW = dict(n_eigs=3)
# insulation: threshold="Li", min_frac_valid_pixels=0.66 (defaults)
INSUL_KW = dict(ignore_diags=2, append_raw_scores=True)
DOTS_KW = dict(expected_value_col="balanced.avg")  # all other defaults
MATCH_TOL = 1  # bins, for vs_published


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, warmup=True):
    """Warm-up run under tracemalloc, then a timed run. Returns (result, seconds, peak_mb)."""
    peak = None
    if warmup:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0, peak


def write_tsv(df, name):
    path = OUT / name
    df.to_csv(
        path,
        sep="\t",
        index=False,
        float_format=FLOAT,
        na_rep="NaN",
        compression={"method": "gzip", "mtime": 0},
    )
    return str(path.relative_to(REPO))


def ctcf_summits():
    cols = ["chrom", "start", "end", "name", "score", "strand", "signal", "p", "q", "peak"]
    df = pd.read_csv(
        DATA / "GM12878_CTCF_peaks_Zufferey2018.bed.gz", sep="\t", header=None, names=cols
    )
    assert (df["peak"] >= 0).all()
    df["summit"] = df["start"] + df["peak"]
    return df


def ctcf_track(bins, summits, binsize):
    chrom = bins["chrom"].iloc[0]
    s = summits.loc[summits["chrom"] == chrom, "summit"].to_numpy()
    idx = s // binsize
    idx = idx[idx < len(bins)]
    counts = np.bincount(idx, minlength=len(bins))
    out = bins[["chrom", "start", "end"]].copy().reset_index(drop=True)
    out["ctcf"] = counts
    return out


def near(a, b, tol):
    """For each element of a: is there an element of b within tol?"""
    b = np.sort(np.asarray(b))
    a = np.asarray(a)
    if len(b) == 0:
        return np.zeros(len(a), bool)
    i = np.searchsorted(b, a)
    lo = b[np.clip(i - 1, 0, len(b) - 1)]
    hi = b[np.clip(i, 0, len(b) - 1)]
    return (np.abs(a - lo) <= tol) | (np.abs(a - hi) <= tol)


def boundary_vs_arrowhead(ins, chrom, binsize, windows):
    dom = pd.read_csv(
        DATA / "arrowhead_gm12878_5kb_domains.bed",
        sep="\t",
        header=None,
        names=["chrom", "start", "end"],
    )
    dom = dom[dom["chrom"] == chrom]
    ref = np.unique(np.concatenate([dom["start"].to_numpy(), dom["end"].to_numpy()]) // binsize)
    res = {
        "n_arrowhead_domains": int(len(dom)),
        "n_arrowhead_boundary_bins": int(len(ref)),
        "tolerance_bins": MATCH_TOL,
    }
    ins = ins.reset_index(drop=True)
    bin_idx = (ins["start"] // binsize).to_numpy()
    for w in windows:
        called = bin_idx[ins[f"is_boundary_{w}"].fillna(False).to_numpy(bool)]
        rec = near(ref, called, MATCH_TOL).mean() if len(ref) else float("nan")
        prec = near(called, ref, MATCH_TOL).mean() if len(called) else float("nan")
        res[f"window_{w}"] = {
            "n_called": int(len(called)),
            "recall": float(rec),
            "precision": float(prec),
        }
    return res


def loops_vs_hiccups(dots, chrom, binsize):
    loops = pd.read_csv(DATA / "GM12878_HiCCUPS_looplist.bedpe", sep="\t")
    loops = loops[(loops["chrom1"] == chrom) & (loops["chrom2"] == chrom)]
    lx = loops["x1"].to_numpy() // binsize
    ly = loops["y1"].to_numpy() // binsize
    dx = dots["start1"].to_numpy() // binsize
    dy = dots["start2"].to_numpy() // binsize
    if len(dots):
        hit = (np.abs(lx[:, None] - dx[None, :]) <= MATCH_TOL) & (
            np.abs(ly[:, None] - dy[None, :]) <= MATCH_TOL
        )
    else:
        hit = np.zeros((len(lx), 0), bool)
    sep = loops["y1"].to_numpy() - loops["x1"].to_numpy()
    return {
        "n_hiccups_loops": int(len(loops)),
        "n_dots": int(len(dots)),
        "tolerance_bins": MATCH_TOL,
        "rule": (
            "loop recalled if some dot has |floor(x1/binsize)-bin1|<=1 "
            "and |floor(y1/binsize)-bin2|<=1"
        ),
        "recall": float(hit.any(axis=1).mean()) if len(lx) else float("nan"),
        "n_recalled": int(hit.any(axis=1).sum()),
        "precision_dots_matching_a_loop": float(hit.any(axis=0).mean())
        if len(dx)
        else float("nan"),
        "n_loops_sep_le_10Mb": int((sep <= 10_000_000).sum()),
        "median_loop_separation_bp": float(np.median(sep)) if len(sep) else float("nan"),
    }


def run_map(name, spec, tmp, summits, report):
    src = DATA / spec["file"]
    dst = tmp / spec["file"]
    shutil.copyfile(src, dst)  # copyfile: the source is read-only, shutil.copy would keep r--r--r--
    clr = cooler.Cooler(str(dst))
    binsize = int(clr.binsize)
    chrom = clr.chromnames[0]
    tim, mem, cnt, san = {}, {}, {}, {}
    report["maps"][name] = {
        "file": spec["file"],
        "chrom": chrom,
        "binsize": binsize,
        "n_bins": int(clr.info["nbins"]),
        "n_pixels": int(clr.info["nnz"]),
        "sum_counts": int(clr.pixels()[:]["count"].sum()),
    }

    # 1. balance
    tracemalloc.start()  # warm-up / memory run without storing
    cooler.balance_cooler(clr, store=False, **BALANCE_KW)
    mem["balance"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    t0 = time.perf_counter()
    w, stats = cooler.balance_cooler(clr, store=True, **BALANCE_KW)
    tim["balance"] = time.perf_counter() - t0
    clr = cooler.Cooler(str(dst))
    bins = clr.bins()[:]
    assert np.allclose(bins["weight"].to_numpy(), w, equal_nan=True)
    cnt["n_bad_bins"] = int(np.isnan(w).sum())
    # with cis_only the stats are per-chromosome arrays
    cnt["balance_converged"] = bool(np.all(stats["converged"]))
    cnt["balance_scale"] = float(np.ravel(stats["scale"])[0])
    cnt["balance_var"] = float(np.ravel(stats["var"])[0])
    report["outputs"].append(
        write_tsv(bins[["chrom", "start", "end", "weight"]], f"cooltools_{name}_weights.tsv.gz")
    )
    report["maxrss_mb_after_step"][f"{name}/balance"] = maxrss_mb()

    # 2. expected
    exp, tim["expected_cis"], mem["expected_cis"] = timed(
        lambda: cooltools.expected_cis(clr, **EXPECTED_KW)
    )
    report["outputs"].append(write_tsv(exp, f"cooltools_{name}_expected.tsv.gz"))
    report["maps"][name]["expected_columns"] = list(exp.columns)
    e = exp[(exp["dist"] >= 2) & (exp["dist"] <= 200) & exp["balanced.avg"].notna()]
    san["expected_spearman_dist_vs_balanced_avg_d2_to_d200"] = float(
        scipy.stats.spearmanr(e["dist"], e["balanced.avg"])[0]
    )
    san["expected_balanced_avg_d2_over_d50"] = float(
        exp.loc[exp["dist"] == 2, "balanced.avg"].iloc[0]
        / exp.loc[exp["dist"] == 50, "balanced.avg"].iloc[0]
    )
    report["maxrss_mb_after_step"][f"{name}/expected_cis"] = maxrss_mb()

    # 3. CTCF track + eigs
    track = ctcf_track(bins, summits, binsize)
    report["outputs"].append(write_tsv(track, f"{name}_ctcf_track.tsv.gz"))
    phasing = track.rename(columns={"ctcf": "value"})
    phasing["value"] = phasing["value"].astype(float)
    (eigvals, eigvecs), tim["eigs_cis"], mem["eigs_cis"] = timed(
        lambda: cooltools.eigs_cis(clr, phasing_track=phasing, **EIGS_KW)
    )
    report["outputs"].append(write_tsv(eigvecs, f"cooltools_{name}_eigs.tsv.gz"))
    report["outputs"].append(write_tsv(eigvals, f"cooltools_{name}_eigvals.tsv.gz"))
    report["maps"][name]["eigs_columns"] = list(eigvecs.columns)
    report["maps"][name]["eigvals_columns"] = list(eigvals.columns)
    report["maps"][name]["eigs_ignore_diags_used"] = int(
        clr._load_attrs("bins/weight").get("ignore_diags", 2)
    )
    cnt["ctcf_summits_on_chrom"] = int(track["ctcf"].sum())
    cnt["eigvals"] = [float(v) for v in eigvals.filter(like="eigval").iloc[0]]
    ok = eigvecs["E1"].notna()
    san["E1_pearson_ctcf"] = float(np.corrcoef(eigvecs.loc[ok, "E1"], track.loc[ok, "ctcf"])[0, 1])
    san["E1_spearman_ctcf"] = float(
        scipy.stats.spearmanr(eigvecs.loc[ok, "E1"], track.loc[ok, "ctcf"])[0]
    )
    san["E1_frac_positive"] = float((eigvecs.loc[ok, "E1"] > 0).mean())
    report["maxrss_mb_after_step"][f"{name}/eigs_cis"] = maxrss_mb()

    # 4. insulation
    windows = [int(k * binsize) for k in spec["window_bins"]]
    ins, tim["insulation"], mem["insulation"] = timed(
        lambda: cooltools.insulation(clr, windows, **INSUL_KW)
    )
    report["outputs"].append(write_tsv(ins, f"cooltools_{name}_insulation.tsv.gz"))
    report["maps"][name]["insulation_windows_bp"] = windows
    report["maps"][name]["insulation_columns"] = list(ins.columns)
    cnt["n_boundaries"] = {str(wb): int(ins[f"is_boundary_{wb}"].sum()) for wb in windows}
    # CTCF enrichment at boundaries (mean summits per boundary bin / per valid bin)
    valid = ~ins["is_bad_bin"].to_numpy(bool)
    san["ctcf_enrichment_at_boundaries"] = {
        str(wb): float(
            track["ctcf"].to_numpy()[ins[f"is_boundary_{wb}"].to_numpy(bool)].mean()
            / track["ctcf"].to_numpy()[valid].mean()
        )
        for wb in windows
    }
    report["vs_published"][f"{name}_boundaries_vs_arrowhead"] = boundary_vs_arrowhead(
        ins, chrom, binsize, windows
    )
    report["maxrss_mb_after_step"][f"{name}/insulation"] = maxrss_mb()

    # 5. dots (chr20 25 kb only)
    if name == "chr20_25kb":
        kernels = dotfinder.recommend_kernels(binsize)
        report["parameters"]["dots"]["kernels_chosen"] = {
            "w": 3,
            "p": 1,
            "shapes": {k: list(v.shape) for k, v in kernels.items()},
            "arrays": {k: v.astype(int).tolist() for k, v in kernels.items()},
        }
        with warnings.catch_warnings(record=True) as wlog:
            warnings.simplefilter("always")
            dots, tim["dots"], mem["dots"] = timed(
                lambda: cooltools.dots(clr, expected=exp, **DOTS_KW)
            )
        report["maps"][name]["dots_warnings"] = sorted({str(x.message) for x in wlog})
        report["outputs"].append(write_tsv(dots, f"cooltools_{name}_dots.tsv.gz"))
        report["maps"][name]["dots_columns"] = list(dots.columns)
        cnt["n_dots"] = int(len(dots))
        # variants (not written): explicit 10 Mb (= default), 2 Mb, no HiCCUPS filter
        for label, kw in {
            "max_loci_separation_10Mb_explicit": dict(max_loci_separation=10_000_000),
            "max_loci_separation_2Mb": dict(max_loci_separation=2_000_000),
            "cluster_filtering_False": dict(cluster_filtering=False),
        }.items():
            t0 = time.perf_counter()
            d = cooltools.dots(clr, expected=exp, **DOTS_KW, **kw)
            cnt[f"n_dots_{label}"] = int(len(d))
            tim[f"dots_{label}"] = time.perf_counter() - t0
            report["vs_published"][f"{name}_loops_vs_hiccups_{label}"] = loops_vs_hiccups(
                d, chrom, binsize
            )
        report["vs_published"][f"{name}_loops_vs_hiccups"] = loops_vs_hiccups(dots, chrom, binsize)
        report["maxrss_mb_after_step"][f"{name}/dots"] = maxrss_mb()

    report["timings_s"][name] = tim
    report["tracemalloc_peak_mb"][name] = mem
    report["counts"][name] = cnt
    report["sanity"][name] = san


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    summits = ctcf_summits()
    report = {
        "versions": {
            "python": platform.python_version(),
            "cooler": cooler.__version__,
            "cooltools": cooltools.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scipy": scipy.__version__,
            "numba": numba.__version__,
        },
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": 1},
        "parameters": {
            "balance_cooler": {**BALANCE_KW, "rescale_marginals": True, "store": True},
            "expected_cis": {
                **EXPECTED_KW,
                "smooth_sigma": 0.1,
                "intra_only": True,
                "clr_weight_name": "weight",
            },
            "eigs_cis": {
                **EIGS_KW,
                "clip_percentile": 99.9,
                "ignore_diags": "None (-> weight attr ignore_diags = 2)",
                "sort_metric": None,
                "phasing_track": "CTCF peak summit counts per bin (summit = start + col10)",
            },
            "insulation": {
                **INSUL_KW,
                "threshold": "Li",
                "min_frac_valid_pixels": 0.66,
                "min_dist_bad_bin": 0,
                "clr_weight_name": "weight",
            },
            "dots": {
                **DOTS_KW,
                "clr_weight_name": "weight",
                "kernels": "None -> recommend_kernels(binsize)",
                "max_loci_separation": 10_000_000,
                "max_nans_tolerated": 1,
                "n_lambda_bins": 40,
                "lambda_bin_fdr": 0.1,
                "clustering_radius": 20000,
                "cluster_filtering": "None (HiCCUPS filter)",
                "tile_size": 5_000_000,
                "lambda_edges": "[-inf] + logspace(0, 39, 40, base=2**(1/3)) + [inf]",
            },
            "ctcf_track": (
                "number of CTCF peak summits (start + narrowPeak column 10) "
                "with floor(summit/binsize) == bin"
            ),
        },
        "notes": [
            "expected_cis: count.avg = count.sum / n_total, but count.sum sums only valid pixels "
            "(both bins unmasked); balanced.avg = balanced.sum / n_valid",
            "expected_cis: dist < ignore_diags have NaN sums/avgs, but balanced.avg.smoothed(.agg) "
            "and contact_frequency are filled (extrapolated) there, at dist=1, and at distances "
            "with n_valid = 0; contact_frequency is a copy of balanced.avg.smoothed.agg",
            "eigs_cis: ignore_diags=None is read from the bins/weight attribute (2 here); "
            "eigenvalues are not all positive (E3 negative); vectors phased by sign of corr with "
            "the phasing track",
            "insulation: append_raw_scores defaults to False in cooltools 0.7.1 (set True here); "
            "boundary_strength_* columns come out in a non-sorted window order",
            "dots: kernels are applied with scipy.ndimage.convolve (kernel flipped), so the stored "
            "'lowleft' array has its ones in the upper-right corner; lower triangle of each tile "
            "is "
            "NaN; la_exp.<k>.value = E_raw * conv(O_bal,k)/conv(E_bal,k); NaN footprint counted "
            "with cval=1 outside the tile; dots start1/start2 are the peak pixel, cstart1/cstart2 "
            "the cluster centroid",
            "source .cool files are read-only: copy with shutil.copyfile before "
            "balance(store=True)",
        ],
        "maps": {},
        "timings_s": {},
        "tracemalloc_peak_mb": {},
        "maxrss_mb_after_step": {"after_imports": maxrss_mb()},
        "counts": {},
        "sanity": {},
        "vs_published": {},
        "outputs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in MAPS.items():
            run_map(name, spec, Path(tmp), summits, report)

    report["peak_rss_mb"] = maxrss_mb()
    with open(OUT / "cooltools_reference.json", "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    report["outputs"].append(str((OUT / "cooltools_reference.json").relative_to(REPO)))
    print(
        "recommend_kernels(25000):",
        {k: v.shape for k, v in dotfinder.recommend_kernels(25000).items()},
    )
    print(
        json.dumps(
            {
                k: report[k]
                for k in ("timings_s", "counts", "sanity", "vs_published", "peak_rss_mb")
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
