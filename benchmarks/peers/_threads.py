"""Thread limits for the peer runners that run as scripts in their own environments."""

import os

__all__ = ["limit_threads"]


def limit_threads(threads: int) -> None:
    """Set the thread-count environment variables; call before importing jax or numpy BLAS."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(int(threads))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
