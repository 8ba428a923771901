"""Hi-C: diffomics vs cooler 0.11 / cooltools 0.7.1, step by step, side by side.

Protocol. Every step of every tool runs in its own child process (`benchmarks/peers/
hic_steps.py`), pinned to the same ``--threads`` CPU(s) with the same thread limits, so that
the child's peak resident memory is that step's; a child that only imports the tool (and, for
diffomics, starts the XLA CPU client) gives the baseline memory. In each child the step runs
twice on the same input: the first call includes compilation (JAX for diffomics, numba for
cooltools), the second is the steady time; compile = first - steady. cooltools steps that take
a process pool run a third, warm time with ``--threads`` worker processes (cooler's balancing
splits only into 10M-pixel chunks, one chunk on every map here, so it gets no third call).
Each tool balances the map itself and later steps use that tool's own weights. Every call
reads the map from its ``.cool`` file. A call is stopped after ``--limit`` seconds (default
600) and recorded as not run, with the reason. Before each child the driver waits (at most
``--max-wait`` seconds over the whole run) until other processes leave the CPUs idle, and it
records the CPU time other processes used while each step ran; steps that shared the CPUs
are marked in the report.

Part 1, real maps. GM12878 (Rao 2014) chr20 at 25 kb and chr22 at 50 kb: balance, expected,
eigs (3 eigenvectors phased by CTCF summits per bin, ``tests/data/hic/<map>_ctcf_track.tsv.gz``),
insulation (windows of 3, 5 and 10 bins), dots (chr20 only; cooltools ``dots(expected,
expected_value_col="balanced.avg")`` with its defaults, diffomics ``analyze(loops=True)`` with
its defaults, both up to 10 Mb). Mouse cortical neurons (Bonev 2017, cooltools' test map, 1 Mb
bins, raw counts), chr1..chr19: balance, expected and eigs without a phasing track.

- Agreement with cooltools, per map: Pearson of the weights (and masked bins that differ),
  of expected ``balanced.avg``, of E1 (|Pearson| per chromosome for the mouse map, whose signs
  are arbitrary), of log2 insulation per window; Jaccard of ``is_boundary`` per window; dots:
  the fraction of cooltools dots with a diffomics dot within 1 bin in both coordinates, and
  the reverse.
- Agreement with published calls (GM12878), for both tools: boundary recall and precision
  against the Arrowhead domain ends (starts and ends of the chromosome's domains,
  de-duplicated, binned by ``floor(pos / resolution)``; a match is within 1 bin), per window;
  CTCF enrichment at boundaries (mean CTCF summits in the boundary bin and its two
  neighbours over the same mean across valid bins); recall of the published HiCCUPS loops on
  chr20 (a loop is recalled when a dot has ``|floor(x1 / res) - bin1| <= 1`` and
  ``|floor(y1 / res) - bin2| <= 1``), precision (dots that match a loop), and near-duplicate
  dots (dots with another dot of the same tool within 1 bin).

Part 2, scaling. Synthetic maps at 10 kb of 2,500 to 25,000 bins (human chr1 is 25k bins at
10 kb): Poisson counts of mean ``depth * (1 + d)^-1`` (depth 100) for diagonals ``d <= 200``
(2 Mb), zero beyond, seeded, with a planted loop every 100 bins (the pixel 40 bins off the
diagonal 20-fold, its two neighbours in the row 5-fold) so that the dots step has something
to find; written to a temporary ``.cool`` (not timed). Balance, expected, insulation (10 bins)
and dots (``max_loci_separation`` 2 Mb, both tools) with time and peak memory over the import
baseline, and MiB per 1,000 bins (slope of a least-squares line through the sizes).

Run with ``make bench-hic`` (``--threads 2``); writes ``benchmarks/results/hic.json`` and
``hic.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "peers"))
from _harness import RESULTS_DIR, machine, pinned_cpus, run_child, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRACKS = REPO / "tests" / "data" / "hic"
MOUSE = REPO.parent / "shared" / "data" / "hic_mouse_cortical_neurons"
MOUSE_FILE = "CN.mm9.1000kb.test_sampled.cool"
TOOLS = ("diffomics", "cooltools")
SEED = 0
SIM_RESOLUTION = 10_000
SIM_MAX_DIAG = 200
SIM_DEPTH = 100.0
SIM_LOOP_EVERY = 100  # bins between planted loops
SIM_LOOP_SPAN = 40  # bins (400 kb)
SIM_LOOP_FOLD = 20.0  # enrichment of a planted loop pixel over the decay
MATCH_TOL = 1  # bins


# --- maps ------------------------------------------------------------------------------------


def real_specs(mouse_path: Path) -> list[dict]:
    from diffomics.datasets import gm12878_hic

    specs = []
    for name, chrom, res, steps in (
        ("chr20_25kb", "chr20", 25_000, ["balance", "expected", "eigs", "insulation", "dots"]),
        ("chr22_50kb", "chr22", 50_000, ["balance", "expected", "eigs", "insulation"]),
    ):
        specs.append(
            {
                "name": name,
                "label": f"GM12878 {chrom}, {res // 1000} kb",
                "path": gm12878_hic(chrom),
                "chroms": [chrom],
                "resolution": res,
                "windows_bins": [3, 5, 10],
                "phasing": str(TRACKS / f"{name}_ctcf_track.tsv.gz"),
                "max_loci_separation": 10_000_000,
                "n_eigs": 3,
                "steps": steps,
            }
        )
    specs.append(
        {
            "name": "mouse_cn_1mb",
            "label": "mouse cortical neurons, 1 Mb, chr1-19",
            "path": str(mouse_path),
            "chroms": [f"chr{k}" for k in range(1, 20)],
            "resolution": 1_000_000,
            "windows_bins": [],
            "phasing": None,
            "max_loci_separation": 10_000_000,
            "n_eigs": 3,
            "steps": ["balance", "expected", "eigs"],
        }
    )
    return specs


def synthetic_cool(path: Path, n_bins: int) -> dict:
    """Write a seeded Poisson power-law map of `n_bins` 10 kb bins; return its spec."""
    import cooler

    rng = np.random.default_rng(SEED)
    anchors = np.arange(SIM_LOOP_EVERY // 2, n_bins - SIM_LOOP_SPAN - 1, SIM_LOOP_EVERY)
    b1, b2, cnt = [], [], []
    for d in range(min(SIM_MAX_DIAG, n_bins - 1) + 1):
        i = np.arange(n_bins - d)
        boost = np.ones(i.size)
        for dd, fold in ((0, SIM_LOOP_FOLD), (-1, SIM_LOOP_FOLD / 4), (1, SIM_LOOP_FOLD / 4)):
            if d == SIM_LOOP_SPAN + dd:  # the loop pixel and its neighbours in the row
                boost[anchors] = fold
        c = rng.poisson(SIM_DEPTH / (1.0 + d) * boost, size=i.size)
        keep = c > 0
        b1.append(i[keep])
        b2.append(i[keep] + d)
        cnt.append(c[keep])
    b1, b2, cnt = np.concatenate(b1), np.concatenate(b2), np.concatenate(cnt)
    order = np.lexsort((b2, b1))
    pixels = pd.DataFrame({"bin1_id": b1[order], "bin2_id": b2[order], "count": cnt[order]})
    starts = np.arange(n_bins) * SIM_RESOLUTION
    bins = pd.DataFrame({"chrom": "chr1", "start": starts, "end": starts + SIM_RESOLUTION})
    cooler.create_cooler(str(path), bins, pixels, ordered=True, dtypes={"count": "int32"})
    return {
        "name": f"sim_{n_bins}",
        "label": f"synthetic, {n_bins:,} bins of 10 kb",
        "path": str(path),
        "chroms": ["chr1"],
        "resolution": SIM_RESOLUTION,
        "windows_bins": [10],
        "phasing": None,
        "max_loci_separation": 2_000_000,
        "n_eigs": 0,
        "steps": ["balance", "expected", "insulation", "dots"],
        "n_bins": n_bins,
        "nnz": int(len(pixels)),
        "planted_loops": np.c_[anchors, anchors + SIM_LOOP_SPAN].tolist(),
    }


# --- agreement -------------------------------------------------------------------------------


def _pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 else float("nan")


def _near(a: np.ndarray, b: np.ndarray, tol: int = MATCH_TOL) -> np.ndarray:
    """For each (i, j) row of `a`: is there a row of `b` within `tol` in both coordinates?"""
    a, b = np.asarray(a).reshape(-1, 2), np.asarray(b).reshape(-1, 2)
    if not len(a) or not len(b):
        return np.zeros(len(a), bool)
    return (np.abs(a[:, None, :] - b[None, :, :]).max(axis=2) <= tol).any(axis=1)


def _near_1d(a: np.ndarray, b: np.ndarray, tol: int = MATCH_TOL) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    if not len(a) or not len(b):
        return np.zeros(len(a), bool)
    return (np.abs(a[:, None] - b[None, :]) <= tol).any(axis=1)


def _read(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    return pd.read_csv(path, sep="\t") if path.exists() else None


def _dot_bins(dots: pd.DataFrame, res: int) -> np.ndarray:
    return np.c_[dots["start1"].to_numpy() // res, dots["start2"].to_numpy() // res]


def compare_tools(spec: dict, ours: Path, theirs: Path) -> dict:
    """Compare diffomics with cooltools on one map, from the saved outputs."""
    out: dict = {}
    res = spec["resolution"]
    if (ours / "weights.npy").exists() and (theirs / "weights.npy").exists():
        wd, wc = np.load(ours / "weights.npy"), np.load(theirs / "weights.npy")
        both = np.isfinite(wd) & np.isfinite(wc)
        out["weights"] = {
            "pearson": _pearson(wd, wc),
            "max_rel_diff": float(np.max(np.abs(wd[both] - wc[both]) / wc[both])),
            "masked_diffomics": int(np.isnan(wd).sum()),
            "masked_cooler": int(np.isnan(wc).sum()),
            "masked_differently": int((np.isnan(wd) != np.isnan(wc)).sum()),
        }
        with np.load(ours / "weights.npz") as saved:
            sizes = [saved[c].size for c in spec["chroms"]]
        same_mask = [
            c
            for c, x, y in zip(spec["chroms"], np.split(wd, np.cumsum(sizes)[:-1]),
                               np.split(wc, np.cumsum(sizes)[:-1]), strict=True)
            if np.array_equal(np.isnan(x), np.isnan(y))
        ]  # fmt: skip
        out["weights"]["chroms_with_the_same_mask"] = same_mask
        if len(spec["chroms"]) > 1 and same_mask:
            keep = np.repeat(np.isin(spec["chroms"], same_mask), sizes) & both
            out["weights"]["max_rel_diff_same_mask"] = float(
                np.max(np.abs(wd[keep] - wc[keep]) / wc[keep])
            )
    ed, ec = _read(ours, "expected.tsv"), _read(theirs, "expected.tsv")
    if ed is not None and ec is not None:
        m = ed.merge(ec, on=["region1", "dist"], suffixes=("_d", "_c"))
        out["expected"] = {
            "pearson_balanced_avg": _pearson(m["balanced.avg_d"], m["balanced.avg_c"]),
            "n_valid_equal": bool((m["n_valid_d"] == m["n_valid_c"]).all()),
            "n_distances": len(m),
        }
    gd, gc = _read(ours, "eigs.tsv"), _read(theirs, "eigs.tsv")
    if gd is not None and gc is not None:
        m = gd.merge(gc, on=["chrom", "start"], suffixes=("_d", "_c"))
        per_chrom = {c: _pearson(g["E1_d"], g["E1_c"]) for c, g in m.groupby("chrom", sort=False)}
        r = np.array(list(per_chrom.values()))
        out["eigs"] = {
            "phased": spec["phasing"] is not None,
            "pearson_E1": _pearson(m["E1_d"], m["E1_c"]),
            "abs_pearson_E1_min_over_chroms": float(np.nanmin(np.abs(r))),
            "abs_pearson_E1_median_over_chroms": float(np.nanmedian(np.abs(r))),
            "n_chroms_sign_flipped": int((r < 0).sum()),
            "abs_pearson_E1_min_same_mask": float(
                min(abs(per_chrom[c]) for c in out["weights"]["chroms_with_the_same_mask"])
            )
            if out.get("weights", {}).get("chroms_with_the_same_mask")
            else None,
            "pearson_E1_per_chrom": per_chrom,
        }
    nd, nc = _read(ours, "insulation.tsv"), _read(theirs, "insulation.tsv")
    if nd is not None and nc is not None:
        m = nd.merge(nc, on=["chrom", "start"], suffixes=("_d", "_c"))
        out["insulation"] = {}
        for k in spec["windows_bins"]:
            w = k * res
            a = m[f"is_boundary_{w}_d"].fillna(False).to_numpy(bool)
            b = m[f"is_boundary_{w}_c"].fillna(False).to_numpy(bool)
            out["insulation"][str(k)] = {
                "window_bp": w,
                "pearson_log2": _pearson(
                    m[f"log2_insulation_score_{w}_d"], m[f"log2_insulation_score_{w}_c"]
                ),
                "boundary_jaccard": float((a & b).sum() / max((a | b).sum(), 1)),
                "n_boundaries_diffomics": int(a.sum()),
                "n_boundaries_cooltools": int(b.sum()),
            }
    dd, dc = _read(ours, "dots.tsv"), _read(theirs, "dots.tsv")
    if dd is not None and dc is not None:
        a, b = _dot_bins(dd, res), _dot_bins(dc, res)
        out["dots"] = {
            "n_diffomics": len(a),
            "n_cooltools": len(b),
            "cooltools_found_by_diffomics": float(_near(b, a).mean()) if len(b) else None,
            "diffomics_found_by_cooltools": float(_near(a, b).mean()) if len(a) else None,
        }
        if "planted_loops" in spec:
            planted = np.asarray(spec["planted_loops"])
            out["dots"]["n_planted"] = len(planted)
            out["dots"]["planted_found_diffomics"] = float(_near(planted, a).mean())
            out["dots"]["planted_found_cooltools"] = float(_near(planted, b).mean())
            out["dots"]["diffomics_on_planted"] = (
                float(_near(a, planted).mean()) if len(a) else None
            )
            out["dots"]["cooltools_on_planted"] = (
                float(_near(b, planted).mean()) if len(b) else None
            )
    return out


def compare_published(spec: dict, folder: Path, annotations: dict) -> dict:
    """One tool's boundaries and dots on a GM12878 map vs Arrowhead, CTCF and HiCCUPS."""
    out: dict = {}
    res, chrom = spec["resolution"], spec["chroms"][0]
    ins = _read(folder, "insulation.tsv")
    if ins is not None:
        dom = annotations["domains"]
        dom = dom[dom["chrom"] == chrom]
        ref = np.unique(np.r_[dom["start"].to_numpy(), dom["end"].to_numpy()] // res)
        track = pd.read_csv(spec["phasing"], sep="\t")["ctcf"].to_numpy(np.float64)
        around = np.convolve(track, np.ones(2 * MATCH_TOL + 1), mode="same")
        idx = (ins["start"].to_numpy() // res).astype(int)
        valid = ~ins["is_bad_bin"].fillna(True).to_numpy(bool)
        out["n_arrowhead_domains"] = len(dom)
        out["n_arrowhead_boundary_bins"] = len(ref)
        out["windows"] = {}
        for k in spec["windows_bins"]:
            called = idx[ins[f"is_boundary_{k * res}"].fillna(False).to_numpy(bool)]
            out["windows"][str(k)] = {
                "n_boundaries": len(called),
                "recall": float(_near_1d(ref, called).mean()) if len(ref) else None,
                "precision": float(_near_1d(called, ref).mean()) if len(called) else None,
                "ctcf_enrichment": float(around[called].mean() / around[idx[valid]].mean())
                if len(called)
                else None,
            }
    dots = _read(folder, "dots.tsv")
    if dots is not None:
        loops = annotations["loops"]
        loops = loops[(loops["chrom1"] == chrom) & (loops["chrom2"] == chrom)]
        lxy = np.c_[loops["x1"].to_numpy() // res, loops["y1"].to_numpy() // res]
        dxy = _dot_bins(dots, res)
        near_self = (
            (np.abs(dxy[:, None, :] - dxy[None, :, :]).max(axis=2) <= MATCH_TOL).sum(axis=1) - 1
            if len(dxy)
            else np.zeros(0)
        )
        out["loops"] = {
            "n_hiccups_loops": len(lxy),
            "n_dots": len(dxy),
            "recall": float(_near(lxy, dxy).mean()) if len(lxy) else None,
            "n_recalled": int(_near(lxy, dxy).sum()),
            "precision": float(_near(dxy, lxy).mean()) if len(dxy) else None,
            "near_duplicates": int((near_self > 0).sum()),
        }
    return out


# --- runs ------------------------------------------------------------------------------------


def _busy_seconds() -> float:
    """CPU seconds spent busy on this machine since boot, all CPUs (steal included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    user, nice, system, _, _, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(budget: dict, *, threshold: float = 0.2, probe: float = 2.0) -> float:
    """Wait until other processes use less than `threshold` CPUs; returns the seconds waited.

    Spends at most ``budget["left"]`` seconds over the whole run, then goes on regardless (the
    load of other processes during each step is recorded as ``other_cpu_seconds``).
    """
    waited = 0.0
    while True:
        before = _busy_seconds()
        time.sleep(probe)
        if (_busy_seconds() - before) / probe < threshold or budget["left"] <= 0:
            return waited
        time.sleep(10.0)
        waited += 10.0 + probe
        budget["left"] -= 10.0 + probe


def run(tool: str, step: str, spec: dict, work: Path, args) -> dict:
    """Run one step of one tool in a pinned child; merge its timings with time and memory.

    Also records the CPU time the child used and the CPU time other processes used on the
    machine meanwhile (``other_cpu_seconds``), which slows the step when CPUs are shared.
    """
    waited = wait_quiet(args.wait_budget)
    folder = work / tool / spec["name"]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        "timeout", "-k", "30", str(int(3.5 * args.limit + 120)),
        sys.executable, __file__, "--run-step", step, "--tool", tool,
        "--spec", str(work / "specs.json"), "--dataset", spec["name"],
        "--folder", str(folder), "--threads", str(args.threads), "--limit", str(args.limit),
    ]  # fmt: skip
    if step == "baseline":
        cmd = cmd[4:]
    busy, kids = _busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    child = run_child(cmd, threads=args.threads)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = after.ru_utime - kids.ru_utime + after.ru_stime - kids.ru_stime
    child["cpu_seconds"] = own
    child["other_cpu_seconds"] = max(_busy_seconds() - busy - own, 0.0)
    child["waited_for_quiet_s"] = waited
    child["cpus"] = pinned_cpus(args.threads)
    record_path = folder / f"{step}.json"
    if child["returncode"] != 0 or not record_path.exists():
        why = "killed by the outer time limit" if child["returncode"] in (124, 137) else ""
        return {"error": f"exit {child['returncode']} {why}".strip(), **child}
    return {**json.loads(record_path.read_text()), **child}


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if isinstance(x, int | np.integer):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def _secs(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def contention(payload: dict, waited: float) -> dict:
    """How much other processes used the CPUs while the steps ran."""
    records = [r for b in payload["steps"].values() for s in b.values() for r in s.values()]
    frac = [
        r["other_cpu_seconds"] / r["wall_seconds"]
        for r in records
        if r.get("wall_seconds") and "other_cpu_seconds" in r
    ]
    shared = [
        f"{name} {step} {tool} ({r['other_cpu_seconds'] / r['wall_seconds']:.2f} CPU)"
        for name, block in payload["steps"].items()
        for step, by_tool in block.items()
        for tool, r in by_tool.items()
        if _shared(r)
    ]
    return {
        "steps_over_10pct": shared,
        "max_other_cpus": max(frac, default=0.0),
        "n_steps_over_10pct": int(sum(f > 0.1 for f in frac)),
        "n_steps": len(frac),
        "waited_for_quiet_s": waited,
    }


def _shared(record: dict) -> bool:
    """Whether other processes used more than 10 % of a CPU while the step ran."""
    wall = record.get("wall_seconds") or 0.0
    return wall > 0 and record.get("other_cpu_seconds", 0.0) > 0.1 * wall


def best_warm(record: dict) -> float | None:
    """The cooltools warm time: the faster of one process and the process pool."""
    times = [record.get("steady_s"), record.get("warm_nproc_s")]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def memory_over_baseline(payload: dict) -> None:
    base = payload["baselines"]
    for block in payload["steps"].values():
        for step in block.values():
            for tool, rec in step.items():
                if "peak_rss_mib" in rec and "peak_rss_mib" in base.get(tool, {}):
                    rec["peak_over_baseline_mib"] = rec["peak_rss_mib"] - base[tool]["peak_rss_mib"]


def scaling_summary(payload: dict) -> dict:
    """MiB over baseline per 1,000 bins: least-squares slope through the sizes, per step."""
    out: dict = {}
    sims = [s for s in payload["maps"] if s["name"].startswith("sim_")]
    for tool in TOOLS:
        for step in ("balance", "expected", "insulation", "dots"):
            pts = [
                (s["n_bins"] / 1000, payload["steps"][s["name"]][step][tool])
                for s in sims
                if step in payload["steps"].get(s["name"], {})
            ]
            pts = [(x, r["peak_over_baseline_mib"]) for x, r in pts if "error" not in r]
            if len(pts) >= 2:
                x, y = np.array(pts).T
                slope, intercept = np.polyfit(x, y, 1)
                out.setdefault(tool, {})[step] = {
                    "mib_per_1k_bins": float(slope),
                    "intercept_mib": float(intercept),
                    "sizes": [int(1000 * v) for v in x],
                }
    return out


# --- report ----------------------------------------------------------------------------------


def markdown(payload: dict) -> str:
    maps = {s["name"]: s for s in payload["maps"]}
    real = [n for n in maps if not n.startswith("sim_")]
    agree = payload["agreement_cooltools"]
    lines = [
        "# Hi-C benchmark: diffomics vs cooler / cooltools",
        "",
        f"Command: `{payload['command']}`; {payload['threads']} thread(s) per tool, pinned to "
        f"the same CPU(s), {payload['machine']['date']}; total run "
        f"{payload['total_seconds'] / 60:.1f} min. Versions: "
        + ", ".join(f"{k} {v}" for k, v in payload["versions"].items())
        + f" (commit {str(payload.get('source', {}).get('commit'))[:8]}). Other processes "
        f"used at most {payload.get('contention', {}).get('max_other_cpus', float('nan')):.2f} "
        "CPU during any step.",
        "",
        "## Agreement with cooltools",
        "",
        "| quantity | " + " | ".join(maps[n]["label"] for n in real) + " |",
        "|---|" + "---|" * len(real),
    ]

    def row(label, get):
        vals = []
        for n in real:
            try:
                vals.append(get(agree[n]))
            except (KeyError, TypeError):
                vals.append("-")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    row("weights: Pearson", lambda a: f"{a['weights']['pearson']:.6f}")
    row("weights: max relative difference", lambda a: f"{a['weights']['max_rel_diff']:.1e}")
    row(
        "mouse: chromosomes with the same mask; their max relative difference / min abs(E1 r)",
        lambda a: (
            f"{len(a['weights']['chroms_with_the_same_mask'])} of 19; "
            f"{a['weights']['max_rel_diff_same_mask']:.1e} / "
            f"{a['eigs']['abs_pearson_E1_min_same_mask']:.6f}"
        ),
    )
    row(
        "masked bins (diffomics / cooler / differ)",
        lambda a: (
            f"{a['weights']['masked_diffomics']} / {a['weights']['masked_cooler']} / "
            f"{a['weights']['masked_differently']}"
        ),
    )
    row("expected balanced.avg: Pearson", lambda a: f"{a['expected']['pearson_balanced_avg']:.6f}")
    row("expected n_valid identical", lambda a: str(a["expected"]["n_valid_equal"]))
    row(
        "E1: Pearson (phased by CTCF); mouse: abs(Pearson) per chromosome, min / median",
        lambda a: (
            f"{a['eigs']['pearson_E1']:.6f}"
            if a["eigs"]["phased"]
            else f"{a['eigs']['abs_pearson_E1_min_over_chroms']:.6f} / "
            f"{a['eigs']['abs_pearson_E1_median_over_chroms']:.6f}"
        ),
    )
    for k in (3, 5, 10):
        row(
            f"log2 insulation, {k} bins: Pearson",
            lambda a, k=k: f"{a['insulation'][str(k)]['pearson_log2']:.5f}",
        )
        row(
            f"boundaries, {k} bins: Jaccard (n diffomics / cooltools)",
            lambda a, k=k: (
                f"{a['insulation'][str(k)]['boundary_jaccard']:.3f} "
                f"({a['insulation'][str(k)]['n_boundaries_diffomics']} / "
                f"{a['insulation'][str(k)]['n_boundaries_cooltools']})"
            ),
        )
    row(
        "dots: cooltools' found by diffomics (within 1 bin)",
        lambda a: f"{a['dots']['cooltools_found_by_diffomics']:.3f} of {a['dots']['n_cooltools']}",
    )
    row(
        "dots: diffomics' found by cooltools (within 1 bin)",
        lambda a: f"{a['dots']['diffomics_found_by_cooltools']:.3f} of {a['dots']['n_diffomics']}",
    )

    pub = payload["agreement_published"]
    lines += [
        "",
        "## Agreement with published calls (GM12878)",
        "",
        "Boundaries vs Arrowhead domain ends (within 1 bin) and CTCF enrichment at boundaries "
        "(summits in the boundary bin +-1 over the mean of valid bins):",
        "",
        "| map | window | diffomics: n / recall / precision / CTCF | "
        "cooltools: n / recall / precision / CTCF |",
        "|---|---|---|---|",
    ]
    for n in real:
        if n not in pub:
            continue
        for k in maps[n]["windows_bins"]:
            cells = []
            for tool in TOOLS:
                w = pub[n].get(tool, {}).get("windows", {}).get(str(k))
                cells.append(
                    "-"
                    if w is None
                    else f"{w['n_boundaries']} / {_fmt(w['recall'], 3)} / "
                    f"{_fmt(w['precision'], 3)} / {_fmt(w['ctcf_enrichment'])}"
                )
            lines.append(
                f"| {maps[n]['label']} ({pub[n][TOOLS[0]].get('n_arrowhead_boundary_bins', '-')}"
                f" Arrowhead bins) | {k} bins | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "Dots vs the published HiCCUPS loops (chr20; within 1 bin in both coordinates):",
        "",
        "| tool | dots | HiCCUPS loops recalled | precision | near-duplicate dots |",
        "|---|---|---|---|---|",
    ]
    for n in real:
        for tool in TOOLS:
            lp = pub.get(n, {}).get(tool, {}).get("loops")
            if lp:
                lines.append(
                    f"| {tool} | {lp['n_dots']} | {lp['n_recalled']} of {lp['n_hiccups_loops']}"
                    f" ({_fmt(lp['recall'], 3)}) | {_fmt(lp['precision'], 3)} | "
                    f"{lp['near_duplicates']} |"
                )

    steps = payload["steps"]
    lines += [
        "",
        "## Time per step (seconds)",
        "",
        "diffomics steady = second call; compile = first - second; cooltools warm = second "
        f"call in one process, and with a pool of {payload['threads']} processes; ratio = the "
        "faster cooltools warm time / diffomics steady.",
        "",
        "| map | step | diffomics steady | diffomics compile | cooltools warm (1 process) | "
        f"cooltools warm ({payload['threads']} processes) | cooltools compile | "
        "cooltools / diffomics |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def time_row(name, step, block):
        d, c = block.get("diffomics", {}), block.get("cooltools", {})
        cells = []
        for rec, keys in ((d, ("steady_s", "compile_s")),
                          (c, ("steady_s", "warm_nproc_s", "compile_s"))):  # fmt: skip
            if "error" in rec:
                cells += [rec["error"]] + [""] * (len(keys) - 1)
            else:
                mark = " *" if _shared(rec) else ""
                cells += [_secs(rec.get(k)) + mark for k in keys]
        ratio = "-"
        if "error" not in d and "error" not in c and d.get("steady_s") and best_warm(c):
            ratio = f"{best_warm(c) / d['steady_s']:.1f}"
        lines.append(f"| {maps[name]['label']} | {step} | " + " | ".join(cells) + f" | {ratio} |")

    for n in real:
        for step, block in steps.get(n, {}).items():
            time_row(n, step, block)
    base = payload["baselines"]
    lines += [
        "",
        "## Peak memory per step (MiB)",
        "",
        "Peak resident memory of the step's child process, and over the child that only imports "
        f"the tool (diffomics {_fmt(base.get('diffomics', {}).get('peak_rss_mib'), 0)} MiB, "
        f"cooltools {_fmt(base.get('cooltools', {}).get('peak_rss_mib'), 0)} MiB).",
        "",
        "| map | step | diffomics peak | diffomics over baseline | cooltools peak | "
        "cooltools over baseline |",
        "|---|---|---|---|---|---|",
    ]

    def mem_cells(rec):
        if "peak_rss_mib" not in rec:
            return ["-", "-"]
        return [f"{rec['peak_rss_mib']:.0f}", f"{rec.get('peak_over_baseline_mib', np.nan):.0f}"]

    for n in real:
        for step, block in steps.get(n, {}).items():
            cells = mem_cells(block.get("diffomics", {})) + mem_cells(block.get("cooltools", {}))
            lines.append(f"| {maps[n]['label']} | {step} | " + " | ".join(cells) + " |")

    sims = [n for n in maps if n.startswith("sim_")]
    if sims:
        lines += [
            "",
            "## Scaling (synthetic maps, 10 kb bins, contacts up to 2 Mb)",
            "",
            "Time: diffomics steady (compile) and cooltools warm (the faster of 1 process and "
            "the pool); memory: peak over the import baseline, MiB.",
            "",
            "| bins | pixels | step | diffomics s | cooltools s | cooltools / diffomics | "
            "diffomics MiB | cooltools MiB | agreement (diffomics / cooltools) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n in sims:
            for step, block in steps.get(n, {}).items():
                check = _sim_check(agree.get(n, {}), step, block)
                d, c = block.get("diffomics", {}), block.get("cooltools", {})
                cells = []
                if "error" in d:
                    cells.append(d["error"])
                else:
                    mark = " *" if _shared(d) else ""
                    cells.append(f"{_secs(d.get('steady_s'))} ({_secs(d.get('compile_s'))}){mark}")
                mark = " *" if _shared(c) else ""
                cells.append(c["error"] if "error" in c else _secs(best_warm(c)) + mark)
                ratio = "-"
                if "error" not in d and "error" not in c and d.get("steady_s") and best_warm(c):
                    ratio = f"{best_warm(c) / d['steady_s']:.1f}"
                cells.append(ratio)
                for rec in (d, c):
                    over = rec.get("peak_over_baseline_mib")
                    cells.append("-" if over is None else f"{over:.0f}")
                lines.append(
                    f"| {maps[n]['n_bins']:,} | {maps[n]['nnz']:,} | {step} | "
                    + " | ".join(cells)
                    + f" | {check} |"
                )
        summary = payload["scaling_summary"]
        lines += [
            "",
            "Memory growth, MiB over baseline per 1,000 bins (least-squares slope over the "
            "sizes run):",
            "",
            "| step | diffomics MiB / 1k bins | diffomics intercept MiB | "
            "cooltools MiB / 1k bins | cooltools intercept MiB |",
            "|---|---|---|---|---|",
        ]
        for step in ("balance", "expected", "insulation", "dots"):
            cells = [
                _fmt(summary.get(tool, {}).get(step, {}).get(key), digits)
                for tool in TOOLS
                for key, digits in (("mib_per_1k_bins", 1), ("intercept_mib", 0))
            ]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    notes = list(payload["notes"])
    shared = payload.get("contention", {}).get("steps_over_10pct")
    if shared:
        notes.append(
            "Steps marked * ran while other processes used more than 10 % of a CPU, so their "
            "times are inflated: " + "; ".join(shared) + "."
        )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _sim_check(agree: dict, step: str, block: dict) -> str:
    """One agreement number of a scaling run, for the table."""
    try:
        if step == "balance":
            conv = [
                block[t].get("info", {}).get(k)
                for t, k in (("diffomics", "ice_converged"), ("cooltools", "converged"))
            ]
            conv = " / ".join("-" if c is None else "yes" if c else "no" for c in conv)
            return f"weights r = {agree['weights']['pearson']:.6f}; converged {conv}"
        if step == "expected":
            return f"balanced.avg r = {agree['expected']['pearson_balanced_avg']:.6f}"
        if step == "insulation":
            return f"boundary Jaccard {agree['insulation']['10']['boundary_jaccard']:.3f}"
        if step == "dots":
            d = agree["dots"]
            return (
                f"dots {d['n_diffomics']} / {d['n_cooltools']}; planted found "
                f"{d['planted_found_diffomics']:.2f} / {d['planted_found_cooltools']:.2f} "
                f"of {d['n_planted']}"
            )
    except (KeyError, TypeError):
        return "-"
    return "-"


def source_state() -> dict:
    """The repository commit the run used, and whether diffomics' Hi-C code differed from it."""
    import subprocess

    def git(*cmd):
        done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "src/diffomics/hic")
    return {"commit": git("rev-parse", "HEAD"), "src_hic_uncommitted_changes": changed}


def versions() -> dict:
    out = {}
    for pkg in ("diffomics", "jax", "jaxlib", "numpy", "scipy", "pandas", "cooler",
                "cooltools", "numba"):  # fmt: skip
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


NOTES = [
    "Each tool uses its own weights downstream: diffomics ICE (`ice_balance(cis_only=True)` "
    "on the whole file, relative variance tol 1e-10) and cooler "
    "`balance_cooler(cis_only=True)` with its defaults (ignore_diags=2, mad_max=5, "
    "min_nnz=10, tol=1e-5 on the unscaled variance).",
    "Every call reads the map from the .cool file. diffomics `analyze` also computes the "
    "expected in every step (it is cheap); cooltools `dots` gets an expected computed before "
    "the timed calls. cooltools `expected_cis` runs with smooth=False (diffomics does not "
    "smooth; the dots use balanced.avg).",
    "Mouse map: both tools balance the whole file (chr1..chr19, chrX, chrY and chrM) with "
    "the MAD filter set from all chromosomes together, each chromosome balanced on its own; "
    "diffomics then analyses chr1..chr19 in one `analyze(path, region=chroms)` call and "
    "cooltools expected and eigs use a view of chr1..chr19. No phasing track, so the E1 signs "
    "are arbitrary: "
    "compare abs(Pearson).",
    "Dots: both tools cluster the enriched pixels into BIRCH blobs of radius 20 kb (cooltools "
    "with scikit-learn's Birch, diffomics with `birch_labels`, the same partition on "
    "cooltools' chr20 pixels), which at 25 kb merges pairs of adjacent pixels but not rows of "
    "three. The near-duplicate column counts dots with another dot of the same tool within "
    "1 bin.",
    "Synthetic maps: ICE converges slowly on maps whose contacts stop at 2 Mb, and both "
    "tools stop at their 200-iteration limit without converging; the balance times are "
    "200 iterations each.",
    "One run on a 2-CPU virtual machine: sub-second steady times can vary between runs.",
    "Peak memory is the child's ru_maxrss (the largest single process; cooltools pool workers "
    "are forked from it). The baseline child imports the tool (diffomics: diffomics.hic, "
    "cooler, and starts the XLA CPU client; cooltools: cooler, cooltools, bioframe).",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="2500,5000,10000,25000")
    parser.add_argument("--maps", default="chr20_25kb,chr22_50kb,mouse_cn_1mb")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--limit", type=float, default=600.0, help="seconds per call")
    parser.add_argument("--mouse-cool", default=str(MOUSE / MOUSE_FILE))
    parser.add_argument("--workdir", help="keep the outputs here (default: a temporary folder)")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=3600.0,
        help="seconds the whole run may wait for other processes to leave the CPUs idle",
    )
    parser.add_argument(
        "--render", action="store_true", help="rewrite hic.md from results/hic.json and exit"
    )
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_step:
        from hic_steps import baseline, run_step

        folder = Path(args.folder)
        if args.run_step == "baseline":
            (folder / "baseline.json").write_text(json.dumps(baseline(args.tool)))
            return
        specs = {s["name"]: s for s in json.loads(Path(args.spec).read_text())}
        run_step(args.tool, args.run_step, specs[args.dataset], folder,
                 threads=args.threads, limit=args.limit)  # fmt: skip
        return

    if args.render:
        payload = json.loads((RESULTS_DIR / "hic.json").read_text())
        write_results("hic", payload, markdown(payload))
        return
    started = time.perf_counter()
    args.wait_budget = {"left": args.max_wait}
    tools = args.tools.split(",")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    wanted = [m for m in args.maps.split(",") if m]
    payload: dict = {
        "command": f"make bench-hic THREADS={args.threads}",
        "threads": args.threads,
        "machine": machine(),
        "versions": versions(),
        "source": source_state(),
        "parameters": {
            "limit_s_per_call": args.limit,
            "match_tolerance_bins": MATCH_TOL,
            "synthetic": {
                "resolution": SIM_RESOLUTION,
                "max_diag": SIM_MAX_DIAG,
                "depth": SIM_DEPTH,
                "seed": SEED,
                "sizes": sizes,
            },  # fmt: skip
            "cooler_balance": "balance_cooler(cis_only=True, ignore_diags=2, mad_max=5, "
            "min_nnz=10, min_count=0, tol=1e-5, max_iters=200)",
            "cooltools_expected": "expected_cis(ignore_diags=2, smooth=False, "
            "aggregate_smoothed=False)",
            "cooltools_eigs": "eigs_cis(phasing_track, n_eigs=3) (clip_percentile=99.9)",
            "cooltools_insulation": "insulation(windows, ignore_diags=2) (threshold='Li', "
            "min_frac_valid_pixels=0.66)",
            "cooltools_dots": "dots(expected, expected_value_col='balanced.avg', "
            "max_loci_separation) (kernels from recommend_kernels, lambda_bin_fdr=0.1, "
            "clustering_radius=20000)",
            "diffomics_balance": "ice_balance(read_cool(path, region=chromnames), "
            "cis_only=True) (ignore_diags=2, min_nnz=10, mad_max=5, max_iter=200, tol=1e-10)",
            "diffomics_steps": "analyze(path, region=chroms, balance=weights, windows=() | "
            "windows, n_eigs=0 | 3, loops=False | True, phasing_track, max_loci_separation)",
        },
        "maps": [],
        "baselines": {},
        "steps": {},
        "notes": list(NOTES),
    }
    work_ctx = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(work_ctx.name if work_ctx else args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        specs = [s for s in real_specs(Path(args.mouse_cool)) if s["name"] in wanted]
        missing = [s for s in specs if not Path(s["path"]).exists()]
        for spec in missing:
            payload["notes"].append(f"{spec['label']}: no file at {spec['path']}; skipped")
        specs = [s for s in specs if s not in missing]
        for n in sizes:
            t0 = time.perf_counter()
            spec = synthetic_cool(work / f"sim_{n}.cool", n)
            spec["create_seconds"] = time.perf_counter() - t0
            specs.append(spec)
            print(f"wrote {spec['label']}: {spec['nnz']:,} pixels", flush=True)
        payload["maps"] = specs
        (work / "specs.json").write_text(json.dumps(specs))
        for tool in tools:
            payload["baselines"][tool] = run(tool, "baseline", {"name": "baseline"}, work, args)
            print(f"[baseline] {tool}: {payload['baselines'][tool]}", flush=True)
        too_slow: dict = {}  # (tool, step) -> bins at which a call ran past the limit
        for spec in specs:
            block = payload["steps"].setdefault(spec["name"], {})
            for step in spec["steps"]:
                for tool in tools:
                    key = (tool, step)
                    if key in too_slow and spec["name"].startswith("sim_"):
                        block.setdefault(step, {})[tool] = {
                            "error": f"not run: ran past the {args.limit:.0f} s limit at "
                            f"{too_slow[key]:,} bins"
                        }
                        continue
                    if step != "balance" and "error" in block.get("balance", {}).get(tool, {}):
                        block.setdefault(step, {})[tool] = {"error": "not run: balance failed"}
                        continue
                    rec = run(tool, step, spec, work, args)
                    block.setdefault(step, {})[tool] = rec
                    if "error" in rec and spec["name"].startswith("sim_"):
                        too_slow[key] = spec["n_bins"]
                    shown = {
                        k: rec.get(k)
                        for k in ("first_s", "steady_s", "warm_nproc_s", "peak_rss_mib", "error")
                    }
                    print(f"[{spec['name']}] {step} {tool}: {shown}", flush=True)
        memory_over_baseline(payload)

        from diffomics.datasets import gm12878_annotations

        annotations = gm12878_annotations()
        payload["agreement_cooltools"] = {
            s["name"]: compare_tools(
                s, work / "diffomics" / s["name"], work / "cooltools" / s["name"]
            )  # fmt: skip
            for s in specs
        }
        payload["agreement_published"] = {
            s["name"]: {t: compare_published(s, work / t / s["name"], annotations) for t in tools}
            for s in specs
            if s["name"].startswith("chr")
        }
        payload["scaling_summary"] = scaling_summary(payload)
    finally:
        if work_ctx is not None:
            shutil.rmtree(work, ignore_errors=True)
    payload["total_seconds"] = time.perf_counter() - started
    payload["contention"] = contention(payload, args.max_wait - args.wait_budget["left"])
    if source_state() != payload["source"]:
        payload["notes"].append(
            "WARNING: the diffomics commit or its Hi-C sources changed during the run; the "
            "steps may mix versions. Run again."
        )
    json_path, md_path = write_results("hic", payload, markdown(payload))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
