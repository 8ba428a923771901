"""Chromatin-state HMMs: diffomics vs hmmlearn 0.3.3, side by side on planted states.

Protocol. Tracks of ``n_bins`` genomic bins x 6 histone marks are sampled from 5 planted
chromatin states (`tests/epigenomics/simulate.py`: ChromHMM-like mark profiles, sticky
transitions 0.95, seed 0), as binarised marks (``bernoulli``) and as read counts
(``poisson``, mean ``0.3 + 10 x profile``). For each track, both tools start from the same
parameters (`diffomics.epigenomics.init_hmm_params`, seed 0: k-means with 10 restarts, the
transition matrix at 0.9 on the diagonal) and run exactly ``--iterations`` Baum-Welch
iterations (hmmlearn ``tol=-inf``, diffomics ``tol=0``); diffomics also fits by gradient
(`fit_hmm`, Adam, ``--adam-steps`` steps, learning rate 0.05) from the same start.

- Counts: `hmmlearn.hmm.PoissonHMM` (``lambdas_prior=0``) is the same model as diffomics'
  ``poisson``, so the fitted log-likelihoods are directly comparable.
- Binarised marks: hmmlearn has no multivariate Bernoulli HMM. Independent Bernoulli marks are
  a categorical emission over the 2**6 = 64 mark combinations, so hmmlearn runs
  `CategoricalHMM` started from the product of the same Bernoulli probabilities; its M-step
  then fits an unconstrained 64-category distribution per state (63 parameters per state
  instead of ChromHMM's 6), a richer model with a higher likelihood on the same data.

Measured per tool, each in its own child process pinned to the same ``--threads`` CPU(s) with
the same thread limits (`_harness.run_child`): the fit twice on the same input (first call =
JIT compilation + fit for diffomics; compile = first - second; the second is the steady
time), then posterior marginals + Viterbi path twice (same). Accuracy: adjusted Rand index
(sklearn) of the fitted model's Viterbi path against the planted states, and the final
log-likelihood per bin. Agreement at fixed parameters: with the planted parameters, the
maximum absolute difference of the posterior marginals, the difference of the
log-likelihoods, and the fraction of bins where the Viterbi paths agree.

Run with ``make bench-chromatin`` (``--threads 2``); writes
``benchmarks/results/chromatin_states.json`` and ``chromatin_states.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO))
from tests.epigenomics.simulate import simulate  # noqa: E402

from _harness import machine, pinned_cpus, run_child, write_results  # noqa: E402

NAME = "chromatin_states"
SIZES = (2_000, 20_000, 100_000)
MODELS = ("bernoulli", "poisson")
TOOLS = ("diffomics_em", "diffomics_adam", "hmmlearn")
N_STATES, N_MARKS, SEED, DEPTH = 5, 6, 0, 10.0
ADAM_LR = 0.05


# --- children ---------------------------------------------------------------------------------


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _bits():
    return (np.arange(2**N_MARKS)[:, None] >> np.arange(N_MARKS)[None, :]) & 1


def _hmmlearn_model(model: str, pi, transmat, means, **kwargs):
    from hmmlearn import hmm

    if model == "poisson":
        m = hmm.PoissonHMM(n_components=N_STATES, init_params="", lambdas_prior=0.0,
                           lambdas_weight=0.0, **kwargs)  # fmt: skip
        m.lambdas_ = means
    else:
        m = hmm.CategoricalHMM(n_components=N_STATES, n_features=2**N_MARKS, init_params="",
                               **kwargs)  # fmt: skip
        bits = _bits()
        m.emissionprob_ = np.prod(
            np.where(bits[None] == 1, means[:, None, :], 1.0 - means[:, None, :]), axis=2
        )
    m.startprob_, m.transmat_ = pi, transmat
    return m


def _hmmlearn_x(model: str, x: np.ndarray) -> np.ndarray:
    if model == "poisson":
        return x.astype(np.int64)
    return (x.astype(np.int64) << np.arange(N_MARKS)[None, :]).sum(axis=1)[:, None]


def child_hmmlearn(d: dict, model: str, iterations: int) -> tuple[dict, dict]:
    x = _hmmlearn_x(model, d["x"])
    init = (np.exp(d["init_log_pi"]), np.exp(d["init_log_A"]), d["init_means"])
    fits, times = [], []
    for _ in range(2):
        m = _hmmlearn_model(model, *init, n_iter=iterations, tol=-np.inf, params="ste"
                            if model == "bernoulli" else "stl")  # fmt: skip
        _, t = _timed(lambda m=m: m.fit(x))
        fits.append(m)
        times.append(t)
    m = fits[-1]
    decode_times = []
    for _ in range(2):
        (post, (_, path)), t = _timed(lambda: (m.predict_proba(x), m.decode(x)))
        decode_times.append(t)
    truth = _hmmlearn_model(model, d["pi"], d["transmat"], d["means"])
    fixed = {
        "posteriors": truth.predict_proba(x),
        "loglik": truth.score(x),
        "viterbi": truth.decode(x)[1],
    }
    record = {
        "fit_first_s": times[0],
        "fit_steady_s": times[1],
        "decode_first_s": decode_times[0],
        "decode_steady_s": decode_times[1],
        "n_iter": len(m.monitor_.history),
        "final_loglik": float(m.score(x)),
        "history": [float(v) for v in m.monitor_.history],
        "fixed_loglik": float(fixed["loglik"]),
    }
    return record, {"viterbi": path, "fixed_posteriors": fixed["posteriors"],
                    "fixed_viterbi": fixed["viterbi"]}  # fmt: skip


def child_diffomics(d: dict, model: str, tool: str, iterations: int, adam_steps: int):
    import jax
    import jax.numpy as jnp

    from diffomics.epigenomics import (
        HMMParams,
        baum_welch,
        emission_log_prob,
        fit_hmm,
        forward_backward,
        hmm_log_likelihood,
        viterbi,
    )

    x = jnp.asarray(d["x"], jnp.float32)
    init = HMMParams(*(jnp.asarray(d[f"init_{k}"], jnp.float32)
                       for k in ("log_pi", "log_A", "emission", "log_theta")))  # fmt: skip
    times = []
    for _ in range(2):
        if tool == "diffomics_em":
            res, t = _timed(lambda: baum_welch(x, init, emission_model=model,
                                               max_iter=iterations, tol=0.0))  # fmt: skip
            params, n_iter = res.params, res.n_iter
            history = res.log_likelihood.tolist()
        else:
            res, t = _timed(lambda: jax.block_until_ready(fit_hmm(
                x, n_states=N_STATES, emission_model=model, seed=SEED, init=init,
                n_steps=adam_steps, learning_rate=ADAM_LR)))  # fmt: skip
            params, n_iter = res.params, adam_steps
            history = (-res.history * x.shape[0]).tolist()
        times.append(t)

    def decode(p):
        log_e = emission_log_prob(x, p.emission, emission_model=model, log_theta=p.log_theta)
        log_m, ll = forward_backward(p.log_pi, p.log_A, log_e)
        path, _ = viterbi(p.log_pi, p.log_A, log_e)
        return jax.block_until_ready((jnp.exp(log_m), ll, path))

    decode_times = []
    for _ in range(2):
        (_, ll, path), t = _timed(lambda: decode(params))
        decode_times.append(t)
    natural = np.log(d["means"] / (1.0 - d["means"])) if model == "bernoulli" else np.log(
        d["means"])  # fmt: skip
    truth = HMMParams(jnp.log(d["pi"]), jnp.log(d["transmat"]), jnp.asarray(natural),
                      jnp.zeros(N_MARKS))  # fmt: skip
    fixed_post, fixed_ll, fixed_path = decode(truth)
    log_e = emission_log_prob(x, params.emission, emission_model=model)
    record = {
        "fit_first_s": times[0],
        "fit_steady_s": times[1],
        "compile_s": max(times[0] - times[1], 0.0),
        "decode_first_s": decode_times[0],
        "decode_steady_s": decode_times[1],
        "decode_compile_s": max(decode_times[0] - decode_times[1], 0.0),
        "n_iter": int(n_iter),
        "final_loglik": float(hmm_log_likelihood(params.log_pi, params.log_A, log_e)),
        "history": history,
        "fixed_loglik": float(fixed_ll),
    }
    return record, {"viterbi": np.asarray(path), "fixed_posteriors": np.asarray(fixed_post),
                    "fixed_viterbi": np.asarray(fixed_path)}  # fmt: skip


def run_child_mode(args) -> None:
    with np.load(args.data) as f:
        d = dict(f)
    model = str(d["model"])
    if args.child == "hmmlearn":
        record, arrays = child_hmmlearn(d, model, args.iterations)
    else:
        record, arrays = child_diffomics(d, model, args.child, args.iterations, args.adam_steps)
    np.savez(args.out + ".npz", **arrays)
    Path(args.out + ".json").write_text(json.dumps(record))


# --- driver -----------------------------------------------------------------------------------


def make_track(model: str, n_bins: int, folder: Path) -> Path:
    """Simulate a track; its shared start is computed in a child process.

    The driver never imports JAX, so forking the pinned children is safe.
    """
    sim = simulate(n_bins, model=model, n_states=N_STATES, n_marks=N_MARKS, depth=DEPTH,
                   seed=SEED)  # fmt: skip
    path = folder / f"{model}_{n_bins}.npz"
    np.savez(path, model=model, x=sim.x, states=sim.states, pi=sim.pi, transmat=sim.transmat,
             means=sim.means)  # fmt: skip
    subprocess.run([sys.executable, __file__, "--init", str(path)], check=True)
    return path


def add_init(path: Path) -> None:
    """Child: add `init_hmm_params(x, seed=SEED)` (and its state means) to the track file."""
    from diffomics.epigenomics import emission_mean, init_hmm_params

    with np.load(path) as f:
        d = dict(f)
    model = str(d["model"])
    init = init_hmm_params(d["x"], n_states=N_STATES, emission_model=model, seed=SEED)
    np.savez(
        path, **d, init_log_pi=np.asarray(init.log_pi), init_log_A=np.asarray(init.log_A),
        init_emission=np.asarray(init.emission), init_log_theta=np.asarray(init.log_theta),
        init_means=np.asarray(emission_mean(init.emission, emission_model=model), np.float64),
    )  # fmt: skip


def compare(folder: Path, data: Path, records: dict) -> dict:
    from sklearn.metrics import adjusted_rand_score

    with np.load(data) as f:
        states = f["states"]
    out = {}
    arrays = {}
    for tool in TOOLS:
        if "error" in records[tool]:
            continue
        with np.load(folder / f"{data.stem}_{tool}.npz") as f:
            arrays[tool] = dict(f)
        out[f"ari_{tool}"] = float(adjusted_rand_score(states, arrays[tool]["viterbi"]))
    if "diffomics_em" in arrays and "hmmlearn" in arrays:
        a, b = arrays["diffomics_em"], arrays["hmmlearn"]
        out["fixed_max_abs_posterior_diff"] = float(
            np.abs(a["fixed_posteriors"] - b["fixed_posteriors"]).max()
        )
        out["fixed_viterbi_agreement"] = float((a["fixed_viterbi"] == b["fixed_viterbi"]).mean())
        out["fixed_loglik_diff"] = (
            records["diffomics_em"]["fixed_loglik"] - records["hmmlearn"]["fixed_loglik"]
        )
        out["fixed_loglik_hmmlearn"] = records["hmmlearn"]["fixed_loglik"]
        out["fitted_viterbi_agreement_em"] = float((a["viterbi"] == b["viterbi"]).mean())
    return out


def versions() -> dict:
    out = {}
    for pkg in ("diffomics", "jax", "jaxlib", "numpy", "hmmlearn", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _secs(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def markdown(payload: dict) -> str:
    lines = [
        "# Chromatin-state HMM benchmark: diffomics vs hmmlearn",
        "",
        f"Command: `{payload['command']}`; {payload['threads']} thread(s) per tool, pinned to "
        f"the same CPU(s), {payload['machine']['date']}; total run "
        f"{payload['total_seconds'] / 60:.1f} min. Versions: "
        + ", ".join(f"{k} {v}" for k, v in payload["versions"].items())
        + f". {N_STATES} planted states, {N_MARKS} marks; Baum-Welch {payload['iterations']} "
        f"iterations from the same start for both tools; diffomics Adam "
        f"{payload['adam_steps']} steps from the same start.",
        "",
        "## Fits (planted-state recovery and time)",
        "",
        "ARI = adjusted Rand index of the fitted model's Viterbi path vs the planted states. "
        "log-lik = final log-likelihood per bin (each tool's own model). Fit steady = second "
        "fit in the process; compile = first - second (JAX); decode = posterior marginals + "
        "Viterbi, steady. Ratio = hmmlearn steady / diffomics EM steady (> 1: diffomics "
        "faster). Load = 1-min load average of the machine before the child started "
        f"({payload['machine']['cpus_available']} CPUs; other processes were running).",
        "",
        "| marks | bins | tool | ARI | log-lik / bin | fit steady s | compile s | "
        "s / iteration | decode steady s | ratio (fit) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in payload["runs"]:
        recs = run["records"]
        ref = recs.get("hmmlearn", {}).get("fit_steady_s")
        for tool in TOOLS:
            r = recs[tool]
            if "error" in r:
                lines.append(f"| {run['model']} | {run['n_bins']:,} | {tool} | {r['error']} "
                             "| | | | | | | |")  # fmt: skip
                continue
            ratio = (
                f"{ref / r['fit_steady_s']:.2f}"
                if tool == "diffomics_em" and ref and r["fit_steady_s"]
                else "-"
            )
            lines.append(
                f"| {run['model']} | {run['n_bins']:,} | {tool} | "
                f"{run['accuracy'].get('ari_' + tool, float('nan')):.3f} | "
                f"{r['final_loglik'] / run['n_bins']:.4f} | {_secs(r['fit_steady_s'])} | "
                f"{_secs(r.get('compile_s'))} | {_secs(r['fit_steady_s'] / r['n_iter'])} | "
                f"{_secs(r['decode_steady_s'])} | {ratio} | {r['load_before']:.1f} |"
            )
    lines += [
        "",
        "## Agreement at fixed (planted) parameters",
        "",
        "| marks | bins | max abs posterior difference | Viterbi agreement | "
        "log-lik difference (nats, total) | hmmlearn log-lik | fitted EM Viterbi agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in payload["runs"]:
        a = run["accuracy"]
        if "fixed_max_abs_posterior_diff" not in a:
            continue
        lines.append(
            f"| {run['model']} | {run['n_bins']:,} | {a['fixed_max_abs_posterior_diff']:.1e} | "
            f"{a['fixed_viterbi_agreement']:.4f} | {a['fixed_loglik_diff']:.3g} | "
            f"{a['fixed_loglik_hmmlearn']:.1f} | {a['fitted_viterbi_agreement_em']:.4f} |"
        )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in payload["notes"]] + [""]
    return "\n".join(lines)


NOTES = [
    "diffomics runs in float32 (the package default), hmmlearn in float64; the log-likelihood "
    "difference at fixed parameters is float32 rounding of a sum over all bins.",
    "Binarised marks: hmmlearn's CategoricalHMM fits 63 free emission parameters per state "
    "(all 64 mark combinations) where the Bernoulli model has 6, so its likelihood is higher by "
    "construction; its rows are a different model, started from the same parameters.",
    "diffomics' forward-backward is a sequential `lax.scan` (one step per bin), as hmmlearn's "
    "C++ loop is; the JAX version is differentiable and runs under jit / vmap / grad.",
    "Timings were taken on a machine shared with other jobs (load column); ratios from one run.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--adam-steps", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--child", choices=TOOLS)
    parser.add_argument("--data")
    parser.add_argument("--out")
    parser.add_argument("--init")
    args = parser.parse_args()
    if args.init:
        add_init(Path(args.init))
        return
    if args.child:
        run_child_mode(args)
        return

    start = time.perf_counter()
    payload = {
        "command": f"make bench-chromatin THREADS={args.threads}",
        "threads": args.threads,
        "cpus": pinned_cpus(args.threads),
        "iterations": args.iterations,
        "adam_steps": args.adam_steps,
        "machine": machine(),
        "versions": versions(),
        "runs": [],
        "notes": NOTES,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for model in MODELS:
            for n_bins in args.sizes:
                data = make_track(model, n_bins, folder)
                records = {}
                for tool in TOOLS:
                    out = folder / f"{data.stem}_{tool}"
                    cmd = [sys.executable, __file__, "--child", tool, "--data", str(data),
                           "--out", str(out), "--iterations", str(args.iterations),
                           "--adam-steps", str(args.adam_steps)]  # fmt: skip
                    load = os.getloadavg()[0]
                    child = run_child(cmd, threads=args.threads)
                    result = Path(str(out) + ".json")
                    if child["returncode"] != 0 or not result.exists():
                        records[tool] = {"error": f"exit {child['returncode']}", **child}
                    else:
                        records[tool] = {**json.loads(result.read_text()), **child,
                                         "load_before": load}  # fmt: skip
                    print(f"{model} {n_bins} {tool}: {records[tool].get('fit_steady_s')}",
                          flush=True)  # fmt: skip
                payload["runs"].append(
                    {
                        "model": model,
                        "n_bins": n_bins,
                        "records": records,
                        "accuracy": compare(folder, data, records),
                    }
                )
    payload["total_seconds"] = time.perf_counter() - start
    json_path, md_path = write_results(NAME, payload, markdown(payload))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
