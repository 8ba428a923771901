"""Data-parallel placement on JAX's own runtime: a 1-d device mesh, row-sharded data.

Rows (spots, cells) are split over the devices of a `jax.sharding.Mesh` with one axis,
``"data"``; parameters are replicated on every device. A function jit-compiled over such
arrays is partitioned by XLA (GSPMD): each device computes its rows, and the compiler
inserts the reductions over rows, including the sum of per-device gradients. There is no
hand-written collective and no ``pmap``; with a one-device mesh the code path is the same.

A sharded axis must divide evenly over the devices, so rows are padded to a multiple of
the device count. Padding rows repeat the last real row (so every statistic stays finite
on them) and carry weight 0 in `row_weights`; losses that take the weights ignore them
exactly.

Across hosts the same code runs after ``jax.distributed.initialize()``: `data_mesh` then
spans the devices of every process, and arrays are built with
`jax.make_array_from_callback`, so each process reads and places only the rows of its own
devices (see ``docs/distributed.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
import scipy.sparse
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from diffomics.core import _errors
from diffomics.core._errors import ConfigError, ShapeError

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "pad_rows",
    "padded_size",
    "check_in_every_process",
    "process_rows",
    "replicate",
    "row_weights",
    "shard_rows",
    "shard_rows_from",
    "sum_over_processes",
    "to_host",
]

#: Name of the mesh axis that rows (spots, cells) are split over.
DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (``"data"``) over `devices` (default: every device, all hosts).

    The axis is of the automatic kind: shardings of intermediate values are chosen by the
    compiler from those of the inputs, so ordinary JAX code runs on it unchanged.

    Args:
      devices: the devices, in order; None uses ``jax.devices()``.

    Returns:
      A `jax.sharding.Mesh` of shape ``{"data": len(devices)}``.

    Raises:
      ConfigError: `devices` is empty.

    Examples:
      >>> mesh = data_mesh(jax.devices()[:1])
      >>> dict(mesh.shape)
      {'data': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        msg = "devices must hold at least one jax.Device; found an empty sequence."
        raise ConfigError(msg)
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def padded_size(n_rows: int, mesh: Mesh) -> int:
    """`n_rows` rounded up to a multiple of the mesh's device count.

    Args:
      n_rows: number of rows (spots, cells, genes), >= 0.
      mesh: a mesh from `data_mesh`.

    Returns:
      The smallest multiple of ``mesh.devices.size`` that is >= `n_rows`.

    Examples:
      >>> padded_size(10, data_mesh(jax.devices()[:1]))
      10
    """
    n_dev = mesh.devices.size
    return -(-int(n_rows) // n_dev) * n_dev


def pad_rows(x, n_padded: int) -> np.ndarray:
    """Append copies of the last row of `x` until it has `n_padded` rows.

    Copies (rather than zeros) keep per-row statistics finite on the padding, which
    `row_weights` then gives weight 0.

    Args:
      x: array with rows along axis 0, at least one row.
      n_padded: rows wanted, >= ``len(x)``.

    Returns:
      A NumPy array of shape ``(n_padded, *x.shape[1:])``, `x` in its first rows.

    Raises:
      ShapeError: `x` has no rows, or more than `n_padded`.

    Examples:
      >>> pad_rows(np.array([[1, 2], [3, 4]]), 4).tolist()
      [[1, 2], [3, 4], [3, 4], [3, 4]]
    """
    x = np.asarray(x)
    if x.ndim == 0 or not 0 < x.shape[0] <= n_padded:
        msg = f"x must have between 1 and {n_padded} rows to pad; found shape {x.shape}."
        raise ShapeError(msg)
    extra = n_padded - x.shape[0]
    if extra == 0:
        return x
    return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)], axis=0)


def row_weights(n_rows: int, n_padded: int) -> np.ndarray:
    """Weights of padded rows: 1 for the first `n_rows`, 0 after, float32 `(n_padded,)`.

    Args:
      n_rows: number of real rows.
      n_padded: number of rows after padding (`padded_size`), >= `n_rows`.

    Returns:
      float32 array of shape `(n_padded,)`.

    Examples:
      >>> row_weights(3, 4).tolist()
      [1.0, 1.0, 1.0, 0.0]
    """
    return (np.arange(n_padded) < n_rows).astype(np.float32)


def shard_rows(x, mesh: Mesh) -> jax.Array:
    """Place `x` on `mesh`, its rows split over the ``"data"`` axis.

    Each device receives its own block of rows; in a run of several processes, each
    process copies only the blocks of its own devices (`shard_rows_from`).

    Args:
      x: array whose first axis is divisible by the mesh's device count (pad it first with
        `pad_rows`).
      mesh: a mesh from `data_mesh`.

    Returns:
      A `jax.Array` with sharding ``NamedSharding(mesh, PartitionSpec("data"))``.

    Raises:
      ShapeError: the rows do not divide over the devices.

    Examples:
      >>> a = shard_rows(np.ones((4, 2)), data_mesh(jax.devices()[:1]))
      >>> a.sharding.spec == PartitionSpec("data")
      True
    """
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    return shard_rows_from(lambda rows: x[rows], np.shape(x), mesh)


def shard_rows_from(read, shape: tuple[int, ...], mesh: Mesh) -> jax.Array:
    """An array of `shape` on `mesh`, rows split over ``"data"``, read block by block.

    ``read(rows)`` is called with a `slice` of rows once per device of this process (only
    for the devices this process owns, in a run of several processes) and returns those
    rows: a process never touches the other processes' rows, so a file-backed source (a
    backed AnnData, a Zarr array) is read only where it is used.

    Args:
      read: ``read(rows: slice) -> array`` of shape ``(rows.stop - rows.start,
        *shape[1:])``.
      shape: the global shape; ``shape[0]`` divisible by the mesh's device count.
      mesh: a mesh from `data_mesh`.

    Returns:
      A `jax.Array` with sharding ``NamedSharding(mesh, PartitionSpec("data"))``.

    Raises:
      ShapeError: the rows do not divide over the devices.

    Examples:
      >>> x = np.arange(8.0).reshape(4, 2)
      >>> shard_rows_from(lambda rows: x[rows], x.shape, data_mesh(jax.devices()[:1])).sum()
      Array(28., dtype=float32)
    """
    n_dev = mesh.devices.size
    if len(shape) == 0 or shape[0] % n_dev:
        msg = (
            f"x must have a number of rows divisible by the {n_dev} devices of the mesh; "
            f"found shape {tuple(shape)}. Pad it with pad_rows(x, padded_size(n, mesh))."
        )
        raise ShapeError(msg)
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.make_array_from_callback(tuple(shape), sharding, lambda index: read(index[0]))


def on_disk(adata) -> bool:
    """Whether `adata`'s ``X`` is read from a file when indexed (backed h5ad, Zarr)."""
    in_memory = (np.ndarray, scipy.sparse.spmatrix, scipy.sparse.sparray)
    return adata.isbacked or not isinstance(adata.X, in_memory)


def to_host(a) -> np.ndarray:
    """`a` as a NumPy array on this host, gathered from every process when split over them.

    A row-sharded result on a mesh of several processes is not addressable in any one of
    them; it is all-gathered (`jax.experimental.multihost_utils.process_allgather`), so
    every process gets the whole array. Otherwise the same as `numpy.asarray`.

    Args:
      a: a `jax.Array` (or anything `numpy.asarray` takes).

    Returns:
      The whole array, in host memory.

    Examples:
      >>> to_host(shard_rows(np.arange(4.0), data_mesh(jax.devices()[:1]))).tolist()
      [0.0, 1.0, 2.0, 3.0]
    """
    if isinstance(a, jax.Array) and not (a.is_fully_addressable or a.is_fully_replicated):
        from jax.experimental import multihost_utils  # noqa: PLC0415

        a = multihost_utils.process_allgather(a, tiled=True)
    return np.asarray(a)


def replicate(tree, mesh: Mesh):
    """Place every array of the pytree `tree` on all devices of `mesh` (a full copy each).

    Args:
      tree: a pytree of arrays (parameters, optimiser state).
      mesh: a mesh from `data_mesh`.

    Returns:
      The same pytree, each array a `jax.Array` fully replicated on the mesh. On a mesh
      over several processes each process places its host copy of the values on its own
      devices (JAX's `device_put` cannot send to another process's devices); every
      process must then hold the same values, as it does when all run the same program
      with the same seed.

    Examples:
      >>> params = replicate({"w": np.zeros(3)}, data_mesh(jax.devices()[:1]))
      >>> params["w"].sharding.is_fully_replicated
      True
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    if not mesh.is_multi_process:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: _replicated(a, sharding), tree)


def _replicated(a, sharding: NamedSharding) -> jax.Array:
    """The host value of `a` copied to each of this process's devices of `sharding`."""
    if (isinstance(a, jax.Array) and a.sharding.is_fully_replicated
            and a.sharding.device_set == sharding.device_set):  # fmt: skip
        return a  # already replicated there (a parameter from an earlier fit)
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _replicated(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def process_rows(n_rows: int, mesh: Mesh) -> slice:
    """The rows of an `n_rows`-row array split over `mesh` that this process's devices hold.

    `shard_rows` gives device ``i`` of the mesh rows ``[i * b, (i + 1) * b)``, ``b = n_rows /
    n_devices``; a process's devices are consecutive in `data_mesh`, so its rows are one
    block. A one-process mesh holds them all.

    Args:
      n_rows: rows of the array, divisible by the mesh's device count.
      mesh: a mesh from `data_mesh`.

    Returns:
      A `slice` of rows.

    Raises:
      ShapeError: the rows do not divide over the devices.

    Examples:
      >>> process_rows(8, data_mesh(jax.devices()[:1]))
      slice(0, 8, None)
    """
    n_dev = mesh.devices.size
    if n_rows % n_dev:
        msg = f"n_rows must be divisible by the {n_dev} devices of the mesh; found {n_rows}."
        raise ShapeError(msg)
    block = n_rows // n_dev
    mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    return slice(min(mine) * block, (max(mine) + 1) * block)


def sum_over_processes(x, mesh: Mesh) -> np.ndarray:
    """The sum over the processes of `mesh` of each one's float64 array `x` (every process).

    Each process sends ``x`` as two float32 parts, ``hi = float32(x)`` and ``lo =
    float32(x - hi)`` (JAX's collectives run in float32 unless x64 is on), and adds all parts
    in float64: the sum keeps about 48 bits of each ``x``. With one process, `x` itself.

    Args:
      x: a float array, the same shape in every process.
      mesh: a mesh from `data_mesh`.

    Returns:
      float64 array of the shape of `x`.

    Examples:
      >>> sum_over_processes(np.array([1.0, 2.5]), data_mesh(jax.devices()[:1])).tolist()
      [1.0, 2.5]
    """
    x = np.asarray(x, np.float64)
    if not mesh.is_multi_process:
        return x
    from jax.experimental import multihost_utils  # noqa: PLC0415

    hi = x.astype(np.float32)
    lo = (x - hi).astype(np.float32)
    parts = multihost_utils.process_allgather(np.stack([hi, lo]))  # (processes, 2, ...)
    return np.asarray(parts, np.float64).sum(axis=(0, 1))


#: What `check_in_every_process` can tell the other processes a process raised.
_ERRORS = (*(getattr(_errors, name) for name in _errors.__all__), ValueError)


def check_in_every_process(check, mesh: Mesh, what: str):
    """``check()``, whose input error in one process is raised in every process of `mesh`.

    A check that runs on each process's own rows fails in one process only; the others
    would go on to the next collective and wait for it forever. Every process calls this
    at the same point: each runs its `check`, the processes exchange which kind of
    `ValueError` (if any) each one hit, the failing ones raise their own and the others an
    error of the first failing process's class (one of `diffomics.core`'s, else
    `ValueError`) naming it. On a mesh of one process the error is raised as it is.

    Args:
      check: a function of no argument; what it returns is returned.
      mesh: a mesh from `data_mesh`.
      what: what was checked, for the other processes' message.

    Returns:
      ``check()``.

    Raises:
      ValueError: `check`'s, or the other process's kind of error.

    Examples:
      >>> check_in_every_process(lambda: 3, data_mesh(jax.devices()[:1]), "the counts")
      3
    """
    if not mesh.is_multi_process:
        return check()
    from jax.experimental import multihost_utils  # noqa: PLC0415

    result, error, kind = None, None, 0
    try:
        result = check()
    except ValueError as e:
        error = e
        kind = 1 + next(i for i, c in enumerate(_ERRORS) if isinstance(e, c))
    kinds = np.asarray(multihost_utils.process_allgather(np.int32(kind))).ravel()
    failed = np.flatnonzero(kinds).tolist()
    if error is not None:
        raise error
    if failed:
        msg = f"{what}: process {failed[0]} found invalid input; its error names it."
        raise _ERRORS[kinds[failed[0]] - 1](msg)
    return result
