"""Checkpoints of fitting loops: a pytree of arrays and a few named values in one ``.npz``.

Written atomically (a hidden temporary file in the same folder, then ``os.replace``), so a
run killed while it writes leaves the previous checkpoint, never a truncated one. Random
keys (``jax.random.key`` arrays, as in ``nnx.Rngs``) are stored as their raw key data and
restored with their implementation, so a resumed fit draws the same numbers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffomics.core._errors import ConfigError

__all__ = ["load_checkpoint", "save_checkpoint"]


def _is_key(leaf) -> bool:
    return jnp.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def save_checkpoint(path: str | os.PathLike, tree, **values: Any) -> None:
    """Write the arrays of `tree` and the named `values` to `path` (``.npz``), atomically.

    Args:
      path: file to write; its folder must exist. An existing file is replaced.
      tree: a pytree of arrays (parameters, optimiser state, ``nnx.State``), random keys
        included.
      **values: arrays or scalars stored beside the tree under their names (which must
        not start with ``leaf_``); read them back from `load_checkpoint`'s dict.

    Examples:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "fit.npz"
      >>> save_checkpoint(path, {"w": jnp.ones(2), "key": jax.random.key(0)}, epoch=3)
      >>> tree, values = load_checkpoint(path, {"w": jnp.zeros(2), "key": jax.random.key(1)})
      >>> tree["w"].tolist(), int(values["epoch"])
      ([1.0, 1.0], 3)
    """
    path = Path(path)
    arrays = {
        f"leaf_{i}": np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
        for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays, **{k: np.asarray(v) for k, v in values.items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | os.PathLike, like) -> tuple[Any, dict[str, np.ndarray]]:
    """Read a checkpoint written by `save_checkpoint` for a tree shaped like `like`.

    Args:
      path: the ``.npz`` file.
      like: a pytree of the same structure, shapes and dtypes as the one saved (the
        freshly built model and optimiser state); its values are not used.

    Returns:
      ``(tree, values)``: the restored tree (JAX arrays of `like`'s dtypes, random keys of
      its key implementations) and the other named values as NumPy arrays.

    Raises:
      ConfigError: the file holds a different tree (another model, optimiser or size).
    """
    path = Path(path)
    leaves, treedef = jax.tree_util.tree_flatten(like)
    with np.load(path) as stored:
        n_found = sum(k.startswith("leaf_") for k in stored.files)
        found = [stored[f"leaf_{i}"] for i in range(n_found)]
        values = {k: stored[k] for k in stored.files if not k.startswith("leaf_")}
    expected = [np.shape(jax.random.key_data(x) if _is_key(x) else x) for x in leaves]
    if [a.shape for a in found] != expected:
        msg = (
            f"checkpoint {path} holds {len(found)} arrays of shapes "
            f"{[a.shape for a in found][:4]}...; this fit has {len(expected)} of shapes "
            f"{expected[:4]}...: a different model, optimiser or data size. Delete the file "
            "to start afresh."
        )
        raise ConfigError(msg)
    restored = [
        jax.random.wrap_key_data(a, impl=jax.random.key_impl(x))
        if _is_key(x)
        else jnp.asarray(a, dtype=np.asarray(x).dtype)
        for a, x in zip(found, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, restored), values
