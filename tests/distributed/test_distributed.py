"""Data-parallel placement: helpers and padding on one device; sharded runs on four.

`four_devices.py` needs 4 devices, which XLA fixes when JAX starts, so it runs here in a
fresh process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (safe under
pytest-xdist: the child owns its own JAX runtime). The checks that need one device only,
that padding rows change no loss, run in this process.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffomics.core import (
    ConfigError,
    ShapeError,
    data_mesh,
    pad_rows,
    padded_size,
    row_weights,
    shard_rows,
)

HERE = Path(__file__).parent


def _run(script: str, *args, devices: int, timeout: int = 600) -> subprocess.Popen:
    """`script` in a fresh Python with `devices` simulated CPU devices, output piped."""
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, *script.split(), *map(str, args)],
                            cwd=HERE.parent.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_four_simulated_devices_give_the_one_device_results():
    proc = _run(f"-m pytest -p no:cacheprovider -q -rs {HERE / 'four_devices.py'}", devices=4)
    stdout, _ = proc.communicate(timeout=900)
    report = stdout[-8000:]
    assert proc.returncode == 0, report
    summary = stdout.strip().splitlines()[-1]
    assert re.search(r"\b10 passed\b", summary) and "skipped" not in summary, report


def test_helpers_refuse_rows_that_do_not_fit():
    with pytest.raises(ConfigError, match="devices"):
        data_mesh([])
    with pytest.raises(ShapeError, match="rows"):
        pad_rows(np.zeros((5, 2)), 4)
    with pytest.raises(ShapeError, match="rows"):
        pad_rows(np.zeros((0, 2)), 4)
    mesh = data_mesh(jax.devices()[:1])
    with pytest.raises(ShapeError, match="divisible"):
        shard_rows(np.float32(1.0), mesh)
    assert padded_size(7, mesh) == 7
    np.testing.assert_array_equal(row_weights(2, 3), [1.0, 1.0, 0.0])


@pytest.mark.parametrize("likelihood", ["nb", "poisson", "gaussian"])
def test_weight_zero_padding_changes_no_deconvolution_loss(likelihood):
    from diffomics.spatial import (
        deconvolution_mean,
        deconvolution_neg_log_posterior,
        platform_effect_neg_log_marginal,
    )

    rng = np.random.default_rng(0)
    profiles = jnp.asarray(rng.gamma(2.0, 1.0, (3, 6)), jnp.float32)
    x = rng.poisson(20.0, (5, 6)).astype(np.float32)
    log_pi = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(5, 3)), jnp.float32))
    background, theta = jnp.full(6, 0.2), jnp.full(6, 5.0)

    def loss(x, log_pi, weight):
        mu, _ = deconvolution_mean(x, jnp.exp(log_pi), profiles, jnp.ones(6), background,
                                   likelihood=likelihood, spot_weight=weight)  # fmt: skip
        return deconvolution_neg_log_posterior(
            x, mu, log_pi, likelihood=likelihood, theta=theta, background_fraction=background,
            log_prior_mean=jnp.log(jnp.full(3, 1 / 3)), proportion_prior=2.0,
            spot_weight=weight,
        )

    whole = loss(jnp.asarray(x), log_pi, None)
    padded = loss(jnp.asarray(pad_rows(x, 8)), jnp.asarray(pad_rows(log_pi, 8)),
                  jnp.asarray(row_weights(5, 8)))  # fmt: skip
    np.testing.assert_allclose(float(padded), float(whole), rtol=1e-6)
    # unweighted, the three copies of the last spot do change it: the weights are doing work
    assert abs(float(loss(jnp.asarray(pad_rows(x, 8)), jnp.asarray(pad_rows(log_pi, 8)), None))
               - float(whole)) > 1e-3 * abs(float(whole))  # fmt: skip
    bulk = jnp.zeros(3)
    np.testing.assert_allclose(
        float(platform_effect_neg_log_marginal(pad_rows(x, 8), bulk, profiles,
                                               platform_effect_scale=0.5,
                                               spot_weight=jnp.asarray(row_weights(5, 8)))),
        float(platform_effect_neg_log_marginal(x, bulk, profiles, platform_effect_scale=0.5)),
        rtol=1e-6,
    )  # fmt: skip


def test_masked_padding_cells_change_no_vae_loss():
    # integrate(mesh=...) pads a minibatch with cells whose modality masks are 0 and scales
    # the mean by n_padded / n: the same loss and gradient as the unpadded minibatch
    from diffomics.integration._integrate import _place
    from diffomics.operators.multiomics import (
        DifferentiableMultiOmicsVAE,
        MultiOmicsVAEConfig,
    )

    rng = np.random.default_rng(0)
    batch = {"rna_counts": rng.poisson(3.0, (6, 8)).astype(np.float32),
             "atac_counts": (rng.random((6, 10)) < 0.3).astype(np.float32),
             "rna_mask": np.ones(6, np.float32), "atac_mask": np.ones(6, np.float32)}  # fmt: skip
    config = MultiOmicsVAEConfig(modality_dims=[8, 10], latent_dim=3, hidden_dim=8)
    padded = {k: pad_rows(v, 8) for k, v in batch.items()}
    padded["rna_mask"][6:] = 0.0
    padded["atac_mask"][6:] = 0.0

    def loss_and_grad(data, scale):
        vae = DifferentiableMultiOmicsVAE(config, rngs=nnx.Rngs(0))
        step = nnx.jit(nnx.value_and_grad(lambda m, d: scale * m.loss(d)))  # compiled: faster
        loss, grads = step(vae, data)
        return float(loss), jax.tree.leaves(grads)

    whole, grads = loss_and_grad(batch, 1.0)
    pad_loss, pad_grads = loss_and_grad(padded, 8 / 6)
    np.testing.assert_allclose(pad_loss, whole, rtol=1e-5)
    for a, b in zip(pad_grads, grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    placed, scale = _place(batch, np.arange(6), ["rna", "atac"], data_mesh(jax.devices()[:1]))
    assert scale == 1.0 and placed["rna_counts"].shape == (6, 8)


def test_two_processes_read_only_their_cells_and_compute_as_one(tmp_path):
    # jax.distributed on localhost: 2 processes x 2 CPU devices (Gloo collectives), against
    # one process with 4 devices. Each process reads only the cells of its own devices; both
    # end with the same model, which matches the one-process run to 1e-4 (float32 sums over
    # devices in another order); so do the deconvolution's proportions (all spots at once,
    # and in chunks, each process reading only its spots), the GP test's statistics and the
    # Hi-C weights, expected and loops
    from diffomics.datasets import snareseq_celllines

    data = tmp_path / "data"
    data.mkdir()
    for name, adata in snareseq_celllines().items():
        adata[:210].copy().write_h5ad(data / f"{name}.h5ad")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"{n}"
        out.mkdir()
        ranks = [0] if n == 1 else [0, 1]
        procs = [_run(str(HERE / "processes.py"), "--processes", n, "--rank", r, "--port", port,
                      "--data", data, "--out", out, devices=4 // n) for r in ranks]  # fmt: skip
        for proc in procs:
            stdout, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, stdout[-6000:]
        runs[n] = out
    read = lambda n, r: json.loads((runs[n] / f"reads_{r}.json").read_text())  # noqa: E731
    # the minibatch [9, 0, 4, 2, 7, 1, 5] padded to 8 cells: devices 0-1 hold [9, 0, 4, 2]
    assert read(2, 0) == [0, 2, 4, 9]
    assert read(2, 1) == [1, 5, 5, 7]
    assert read(1, 0) == [0, 1, 2, 4, 5, 5, 7, 9]
    load = lambda n, what, r=0: np.load(runs[n] / f"{what}_{r}.npy")  # noqa: E731
    for what in ("history", "latent", "proportions", "loss"):
        np.testing.assert_array_equal(load(2, what, 1), load(2, what, 0))
    np.testing.assert_allclose(load(2, "history"), load(1, "history"), rtol=1e-4)
    np.testing.assert_allclose(load(2, "latent"), load(1, "latent"), atol=1e-4)
    # deconvolution: spots split over the processes, proportions gathered to every process
    assert load(2, "proportions").shape == (79, 8)
    np.testing.assert_allclose(load(2, "proportions"), load(1, "proportions"), atol=1e-4)
    np.testing.assert_allclose(load(2, "loss"), load(1, "loss"), rtol=1e-4)
    np.testing.assert_allclose(load(2, "chunked"), load(1, "chunked"), atol=1e-4)
    # each process read only the spots of its devices: 79 spots at once (80 rows, 40 per
    # process) and in chunks of 30 (32 rows, 16 per process), padding repeating a spot
    spots = {r: set().union(*(range(a, b) for a, b in json.loads(
        (runs[2] / f"spot_reads_{r}.json").read_text()))) for r in (0, 1)}  # fmt: skip
    assert spots[0] == {*range(40), *range(30, 46), *range(60, 76)}
    assert spots[1] == {*range(40, 79), *range(16, 30), *range(46, 60)}
    # a NaN among the cells the second process checks, a bad count among its spots: both
    # processes raise (the first naming the second), not one while the other waits
    errors = [json.loads((runs[2] / f"errors_{r}.json").read_text()) for r in (0, 1)]
    for k, kind in enumerate(("NonFiniteError", "CountsError")):
        assert errors[0][k][0] == errors[1][k][0] == kind, errors
        assert "process 1" in errors[0][k][1]
    assert "77" in errors[1][1][1]
    # the GP test with the spots, then the genes, split over the processes: the same
    # statistics up to the order of the float32 sums over spots (as on four devices of one
    # process); FSV and p-values where the statistic is not ~0, where they are defined
    svg = {n: load(n, "svg") for n in (1, 2)}
    np.testing.assert_array_equal(load(2, "svg", 1), svg[2])
    np.testing.assert_allclose(svg[2][:, 0], svg[1][:, 0], rtol=1e-4, atol=1e-3)
    signal = svg[1][:, 0] > 1.0
    assert signal.sum() >= 25  # 31 of the 150 genes
    np.testing.assert_allclose(svg[2][signal, 1], svg[1][signal, 1], atol=2e-3)
    np.testing.assert_allclose(svg[2][signal, 2], svg[1][signal, 2], rtol=1e-3)
    # Hi-C: balancing and expected from pixels split over the processes, dots on tiles
    hic = {n: np.load(runs[n] / "hic_0.npz") for n in (1, 2)}
    np.testing.assert_allclose(hic[2]["weights"], hic[1]["weights"], rtol=1e-5)
    np.testing.assert_allclose(hic[2]["expected"], hic[1]["expected"], rtol=1e-5)
    np.testing.assert_array_equal(hic[2]["loops"], hic[1]["loops"])
    # several chromosomes: those of each process's devices analysed there, then exchanged
    # (every process has all of them); the one-process (four devices) tables to float32
    # rounding, the same boundaries
    regions = {n: [np.load(runs[n] / f"regions_{r}.npz") for r in ((0,) if n == 1 else (0, 1))]
               for n in (1, 2)}  # fmt: skip
    both = regions[2]
    for key in ("weights", "e1", "insulation", "boundaries", "devices"):
        np.testing.assert_array_equal(both[1][key], both[0][key])
    assert len(set(both[0]["devices"])) == 4  # of both processes: each has 2 devices
    one = regions[1][0]
    np.testing.assert_allclose(both[0]["weights"], one["weights"], rtol=1e-5)
    np.testing.assert_allclose(both[0]["e1"], one["e1"], atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(both[0]["insulation"], one["insulation"], atol=2e-4,
                               equal_nan=True)  # fmt: skip
    np.testing.assert_array_equal(both[0]["boundaries"], one["boundaries"])
