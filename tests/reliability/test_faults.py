"""Fault injection: a command killed while it writes leaves no truncated output, and a re-run
gives the same result as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd

from diffomics.cli import main
from tests.spatial.simulate import simulate


def _outputs(folder):
    """The visible files of `folder` (temporary files are hidden dot files)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _signal_when(args, ready, sig):
    """Run the command `args` in a child and send it `sig` as soon as ``ready()`` is true.

    Returns the child's exit status (non-zero when the signal stopped it).
    """
    code = "import sys; from diffomics.cli import main; sys.exit(main(sys.argv[1:]))"
    # a shell runs background jobs with SIGINT ignored, and the child would inherit that
    # (Python then installs no KeyboardInterrupt handler): give it the default disposition
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(proc.pid, sig)
            break
        time.sleep(0.005)
    return proc.wait(timeout=60)


def _interrupt_when_checkpointed(args, checkpoint):
    """SIGINT the command `args` once `checkpoint` exists (a chunk / epoch is done)."""
    return _signal_when(args, checkpoint.exists, signal.SIGINT)


def _assert_same_table(first, second):
    pd.testing.assert_frame_equal(pd.read_csv(first, sep="\t", index_col=0),
                                  pd.read_csv(second, sep="\t", index_col=0),
                                  check_exact=True)  # fmt: skip


def test_killed_run_leaves_no_truncated_file_and_reruns_identically(tmp_path):
    spatial, reference = simulate(n_spots=60, n_genes=40, seed=3)
    spatial.write_h5ad(tmp_path / "spots.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    args = ["deconvolve", str(tmp_path / "spots.h5ad"), str(tmp_path / "ref.h5ad"),
            "--labels", "cell_type", "--likelihood", "poisson"]  # fmt: skip
    clean = tmp_path / "clean"
    assert main([*args, "--out", str(clean)]) == 0
    expected = _outputs(clean)

    killed = tmp_path / "killed"
    first_write = lambda: killed.is_dir() and any(killed.iterdir())  # noqa: E731
    returncode = _signal_when([*args, "--out", str(killed)], first_write, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, "the run ended before it could be killed"
    partial = _outputs(killed) if killed.is_dir() else []
    assert set(partial) < set(expected)  # killed mid-way: some outputs are missing ...
    for name in partial:  # ... and those present are complete
        if name.endswith(".h5ad"):
            ad.read_h5ad(killed / name)
        else:
            assert (killed / name).read_bytes() == (clean / name).read_bytes(), name

    assert main([*args, "--out", str(killed)]) == 0  # re-run into the same folder
    assert _outputs(killed) == expected
    again = pd.read_csv(killed / "spots.deconvolved.proportions.tsv", sep="\t", index_col=0)
    first = pd.read_csv(clean / "spots.deconvolved.proportions.tsv", sep="\t", index_col=0)
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    np.testing.assert_array_equal(
        ad.read_h5ad(killed / "spots.deconvolved.h5ad").obsm["proportions"],
        ad.read_h5ad(clean / "spots.deconvolved.h5ad").obsm["proportions"],
    )


def test_fit_killed_by_a_signal_resumes_from_its_checkpoint(tmp_path):
    spatial, reference = simulate(n_spots=60, n_genes=40, seed=4)
    spatial.write_h5ad(tmp_path / "spots.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    args = ["deconvolve", str(tmp_path / "spots.h5ad"), str(tmp_path / "ref.h5ad"),
            "--labels", "cell_type", "--likelihood", "poisson"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "through")]) == 0
    checkpoint = tmp_path / "fit.npz"
    resume = [*args, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "resumed")]
    returncode = _interrupt_when_checkpointed(resume, checkpoint)
    assert returncode != 0 and checkpoint.exists(), "the fit ended before the signal"
    assert not (tmp_path / "resumed").exists()  # nothing written before the fit ends
    assert main(resume) == 0
    name = "spots.deconvolved.proportions.tsv"
    _assert_same_table(tmp_path / "resumed" / name, tmp_path / "through" / name)


def test_integration_killed_by_a_signal_resumes_from_its_checkpoint(tmp_path):
    # RNA counts (NB) and binary peaks (Bernoulli) of two groups of 80 cells
    rng = np.random.default_rng(5)
    group = np.repeat([0, 1], 40)
    names = [f"c{i}" for i in range(80)]
    rna = rng.poisson(np.where(group[:, None] == 1, 6.0, 1.0) * np.ones(12), (80, 12))
    atac = rng.random((80, 20)) < np.where(group[:, None] == 1, 0.6, 0.1)
    for key, x in (("rna", rna), ("atac", atac)):
        ad.AnnData(x.astype(np.float32), obs=pd.DataFrame(index=names)).write_h5ad(
            tmp_path / f"{key}.h5ad"
        )
    args = ["integrate", f"rna={tmp_path / 'rna.h5ad'}", f"atac={tmp_path / 'atac.h5ad'}",
            "--max-epochs", "12"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "through")]) == 0
    checkpoint = tmp_path / "train.npz"
    resume = [*args, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "resumed")]
    returncode = _interrupt_when_checkpointed(resume, checkpoint)
    assert returncode != 0 and checkpoint.exists(), "training ended before the signal"
    with np.load(checkpoint) as stored:
        assert 1 <= len(stored["history"]) < 12  # stopped mid-training
    assert not (tmp_path / "resumed").exists()
    assert main(resume) == 0
    name = "rna_atac.integrated.latent.tsv"
    _assert_same_table(tmp_path / "resumed" / name, tmp_path / "through" / name)
