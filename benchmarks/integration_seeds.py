"""Seed-to-seed spread of diffomics' integration metrics, to choose between training settings.

One fit per data set, setting and seed (``integrate(seed=s)``: initialisation, minibatch
order, validation split and sampling noise), on the data and with the metrics of
``benchmarks/integration.py`` (its ``prepare``, ``_run_diffomics`` and ``score``), in this
process, on ``--threads`` pinned CPUs. Settings: the default and each name in
``--variants`` (keys of ``integration.VARIANTS``); on ECCITE-seq also with half the
proteins held out (imputation). Reports the mean and standard deviation over seeds of
FOSCTTM, the label metrics, held-out imputation and the time per epoch.
``--peers totalVI MultiVI`` fits scvi-tools' models too, seed by seed, in the same process
(run it with ``.venv-bench/bin/python``); ``--update`` keeps the rows of the last run that
this one does not redo.

    python benchmarks/integration_seeds.py --variants "diffomics (subset_sampling=False)"
    .venv-bench/bin/python benchmarks/integration_seeds.py --datasets eccite_pbmc500 \
        --peers totalVI --no-default --update
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import (  # noqa: E402
    RESULTS_DIR,
    machine,
    pinned_cpus,
    thread_env,
    write_results,
)

NAME = "integration_seeds"
METRICS = ["seconds_per_epoch", "epochs", "foscttm", "knn_accuracy", "silhouette",
           "hashtag_knn_accuracy", "imputation_r_feature"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--peers", nargs="*", default=[], choices=["totalVI", "MultiVI"])
    parser.add_argument("--no-default", action="store_true",
                        help="skip diffomics' default setting (to add peers or variants only)")
    parser.add_argument("--update", action="store_true",
                        help="keep the last run's rows of the data sets and settings not rerun")
    args = parser.parse_args()
    os.environ.update(thread_env(args.threads))  # before JAX starts
    os.sched_setaffinity(0, pinned_cpus(args.threads))
    import integration as bench

    datasets = args.datasets or list(bench.DATASETS)
    settings = ([] if args.no_default else ["diffomics"]) + args.variants
    unknown = set(args.variants) - set(bench.VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(bench.VARIANTS)}")
    runs, began = [], time.perf_counter()
    command = "python benchmarks/integration_seeds.py " + " ".join(sys.argv[1:])
    today = machine()["date"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            folder = Path(tmp) / name
            bench.prepare(name, folder)
            mods = bench._load(folder, name)
            heldout = np.load(folder / "heldout.npy")
            applicable = [p for p in args.peers if p in bench.METHODS[name]]
            for setting in settings + applicable:
                for held in (False, True) if name == "eccite_pbmc500" else (False,):
                    method = f"{setting} {bench.HOLDOUT}" if held else setting
                    for seed in args.seeds:
                        if setting in applicable:
                            result = bench.run_scvi(setting, mods, seed=seed,
                                                    heldout=heldout if held else None,
                                                    threads=args.threads)  # fmt: skip
                        else:
                            result = bench._run_diffomics(
                                name, mods, heldout=heldout if held else None, seed=seed,
                                **bench.VARIANTS.get(setting, {}),
                            )  # fmt: skip
                        out = folder / "run.npz"
                        np.savez(out, **{k: np.asarray(v) for k, v in result.items()})
                        record = bench.score(method, name, folder, out)
                        record.update(dataset=name, method=method, seed=seed,
                                      command=command, date=today)  # fmt: skip
                        runs.append(record)
                        shown = {k: round(record[k], 3) for k in METRICS if k in record}
                        print(f"[{name}] {method} seed {seed}: {shown}", flush=True)
    previous = RESULTS_DIR / f"{NAME}.json"
    note = None
    if args.update and previous.exists():
        last = json.loads(previous.read_text())
        redone = {(r["dataset"], r["method"]) for r in runs}
        kept = [r for r in last["runs"] if (r["dataset"], r["method"]) not in redone]
        for r in kept:  # runs stored before each run recorded its own command
            r.setdefault("command", last["command"])
            r.setdefault("date", last["machine"]["date"])
        runs = kept + runs
        have = {r["dataset"] for r in runs}
        datasets = [name for name in bench.DATASETS if name in have]
        note = last.get("note")
    payload = {"command": command, "threads": args.threads, "machine": machine(), "runs": runs,
               "summary": summarize(runs, datasets), "total_seconds": time.perf_counter() - began,
               "note": note}  # fmt: skip
    for path in write_results(NAME, payload, markdown(payload)):
        print(path)


def summarize(runs: list[dict], datasets: list[str]) -> list[dict]:
    """Mean and standard deviation over seeds of each data set and setting."""
    summary = []
    for name in datasets:
        for method in dict.fromkeys(r["method"] for r in runs if r["dataset"] == name):
            rows = [r for r in runs if r["dataset"] == name and r["method"] == method]
            stats = {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows])))
                     for k in METRICS if all(k in r for r in rows)}  # fmt: skip
            summary.append({"dataset": name, "method": method, "seeds": len(rows), **stats})
    return summary


def markdown(payload: dict) -> str:
    """The results table, with the command and date that made each setting's rows."""
    made = {}
    for r in payload["runs"]:
        made.setdefault((r["command"], r["date"]), {}).setdefault(r["method"], None)
    lines = [
        "# Integration: spread over seeds",
        "",
        f"{payload['threads']} thread(s), pinned; mean +- standard deviation over the seeds. "
        "Rows made by:",
        "",
        *(f"- `{cmd}` ({date}): {', '.join(methods)}" for (cmd, date), methods in made.items()),
        "",
        *([payload["note"], ""] if payload.get("note") else []),
        "| data set | setting | seeds | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for s in payload["summary"]:
        cells = [f"{s[k][0]:.3f} +- {s[k][1]:.3f}" if k in s else "" for k in METRICS]
        head = f"| {s['dataset']} | {s['method']} | {s['seeds']} | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()
