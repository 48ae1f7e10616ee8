"""A checkpoint directory of ours: an Orbax PyTree of parameters plus a card
(``liquid_jax.checkpoint.card``).

Layout::

    <directory>/liquid_jax.json  the card: {"kind": ..., "format_version": 2, "config": {...}, ...}
    <directory>/params/          Orbax checkpoint written by partial saves
    <directory>/params/state/    its PyTree of parameters (nested dict of arrays)

Parameters may be written in parts (``save_params_streaming``): each disjoint subtree
is added to the Orbax checkpoint and released before the next one is produced, so
host memory holds one part at a time. Writes are atomic: everything goes into a
hidden sibling directory that is renamed to ``<directory>`` only after the last byte
is written, so a failed save leaves nothing at the destination. Paths may be local or
any ``etils.epath`` URL (gs://).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
import orbax.checkpoint.experimental.v1 as ocp_v1
from etils import epath
from jax.experimental import multihost_utils

from liquid_jax import paths
from liquid_jax.checkpoint.card import METADATA_FILE, card_text, read_metadata
from liquid_jax.checkpoint.trees import as_dicts, nested, pure_dicts

PARAMS_DIR = "params"
PYTREE_DIR = "state"  # where Orbax's partial save puts the PyTree inside PARAMS_DIR


def sync_processes(name: str) -> None:
    """A barrier across the processes of a multi-host job (nothing on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _temporary_sibling(directory: epath.Path) -> epath.Path:
    # Deterministic so every process of a multi-host job writes to the same place.
    return directory.parent / f".{directory.name}.partial"


@contextlib.contextmanager
def atomic_directory(
    directory: str | epath.PathLike, *, overwrite: bool = False
) -> Iterator[epath.Path]:
    """Yields a temporary sibling of ``directory`` to fill; renames it on success.

    On any exception the temporary directory is removed and nothing appears at
    ``directory``. Multi-host: every process enters; process 0 creates, renames and
    cleans up, with barriers in between.
    """
    directory = paths.resolve(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"destination {directory} already exists; choose another or remove it")
    tmp = _temporary_sibling(directory)
    primary = jax.process_index() == 0
    if primary and tmp.exists():
        tmp.rmtree()
    sync_processes("liquid_jax_atomic_directory_clean")
    try:
        if primary:
            tmp.mkdir(parents=True)
        sync_processes("liquid_jax_atomic_directory_mkdir")
        yield tmp
        sync_processes("liquid_jax_atomic_directory_written")
        if primary:
            if directory.exists():
                directory.rmtree()
            tmp.rename(directory)
    except BaseException:
        if primary and tmp.exists():
            tmp.rmtree()
        raise
    sync_processes("liquid_jax_atomic_directory_done")


def save_params(
    directory: str | epath.PathLike,
    params: Any,
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, str | epath.PathLike] | None = None,
    max_inflight_gb: float | None = None,
) -> None:
    """Writes ``params`` (nested dict of arrays or nnx.State) and ``metadata`` atomically.

    ``metadata`` must be JSON-serialisable and contain ``"kind"`` (e.g. "transformer",
    "vqgan"); ``format_version`` is added. ``extra_files`` maps names inside the
    checkpoint (e.g. "tokenizer/tokenizer.model") to files copied in.
    ``max_inflight_gb`` bounds the bytes Orbax copies to the host and buffers for
    writing at once (jax.Array leaves; a numpy leaf is buffered whole); None uses
    Orbax's defaults. Every process of a multi-host job must call this with its
    shards of the same global arrays.
    """
    save_params_streaming(directory, [params], metadata, overwrite=overwrite,
                          extra_files=extra_files, max_inflight_gb=max_inflight_gb)


def _orbax_context(max_inflight_gb: float | None) -> ocp_v1.Context:
    limit = None if max_inflight_gb is None else int(max_inflight_gb * 1024**3)
    context = ocp_v1.Context()
    context.memory_options.write_concurrent_bytes = limit
    context.memory_options.transfer_concurrent_bytes = limit
    # Weights barely compress, and zstd's buffers would double the host memory of a save.
    context.array_options.saving.use_compression = False
    return context


def save_params_streaming(
    directory: str | epath.PathLike,
    parts: Iterable[Any],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, str | epath.PathLike] | None = None,
    max_inflight_gb: float | None = None,
) -> None:
    """``save_params`` with the parameters given as disjoint subtrees, written one by one.

    Each part (a nested dict of arrays) is written and released before the next is
    drawn from ``parts``, so a generator producing parts keeps host memory near one
    part plus Orbax's write buffer of about its size. Parts must not share leaves;
    an exception from ``parts`` aborts the save and leaves nothing behind.
    """
    text = card_text(metadata, directory)  # fail before writing anything
    with atomic_directory(directory, overwrite=overwrite) as tmp, _orbax_context(max_inflight_gb):
        written = False
        for part in parts:
            part = pure_dicts(part)
            if jax.tree.leaves(part):
                ocp_v1.partial.save(tmp / PARAMS_DIR, part)
                written = True
            del part  # drop it before the next part is produced
        if not written:
            raise ValueError(f"no parameters to save in {directory}")
        ocp_v1.partial.finalize(tmp / PARAMS_DIR)
        if jax.process_index() == 0:
            for name, source in (extra_files or {}).items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                paths.resolve(source).copy(target)
            (tmp / METADATA_FILE).write_text(text)


def params_pytree(directory: str | epath.PathLike) -> epath.Path:
    """The Orbax PyTree of a checkpoint directory's parameters."""
    return paths.resolve(directory) / PARAMS_DIR / PYTREE_DIR


def _restore_pytree(pytree_dir: epath.Path, args: ocp.args.PyTreeRestore) -> Any:
    with contextlib.closing(ocp.PyTreeCheckpointHandler()) as handler:
        return handler.restore(pytree_dir, args=args)


def pytree_shapes(pytree_dir: str | epath.PathLike) -> dict[str, Any]:
    """Nested dict of jax.ShapeDtypeStruct (no sharding) of an Orbax PyTree directory."""
    with contextlib.closing(ocp.PyTreeCheckpointHandler()) as handler:
        meta = handler.metadata(paths.resolve(pytree_dir))
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype)), as_dicts(meta.tree)
    )


def stored_shapes(directory: str | epath.PathLike) -> dict[str, Any]:
    """Nested dict of jax.ShapeDtypeStruct (no sharding) describing the stored arrays."""
    return pytree_shapes(params_pytree(directory))


def _flat(tree: Any) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf for path, leaf in leaves}


def _check_against_stored(directory: epath.Path, stored: Any, wanted: Any) -> None:
    have, want = _flat(stored), _flat(wanted)
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        raise KeyError(
            f"checkpoint {directory} does not match the requested tree: "
            f"missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    for key, target in want.items():
        if tuple(have[key].shape) != tuple(target.shape):
            raise ValueError(
                f"checkpoint {directory}: tensor {key!r} has shape {tuple(have[key].shape)}, "
                f"expected {tuple(target.shape)}"
            )


def load_param(directory: str | epath.PathLike, path: Sequence[str]) -> np.ndarray:
    """One stored array (``path``: its keys, e.g. ("embed", "embedding")) as a host
    numpy array with its stored dtype; only that array is read."""
    stored: Any = stored_shapes(directory)
    for key in path:
        stored = stored.get(key) if isinstance(stored, dict) else None
    if not isinstance(stored, jax.ShapeDtypeStruct):
        raise KeyError(f"checkpoint {directory} has no tensor {'/'.join(path)!r}")
    item = nested(path, ocp.RestoreArgs(restore_type=np.ndarray))
    tree = _restore_pytree(params_pytree(directory), ocp.args.PyTreeRestore(item=item, restore_args=item, partial_restore=True))
    for key in path:
        tree = tree[key]
    return tree


def read_pytree(pytree_dir: str | epath.PathLike, abstract: Any = None, shardings: Any = None) -> dict[str, Any]:
    """The nested dict of arrays of an Orbax PyTree directory (ours or a training step's
    ``params``); ``abstract`` and ``shardings`` as in ``load_params``."""
    pytree_dir = paths.resolve(pytree_dir)
    stored = pytree_shapes(pytree_dir)
    if abstract is None and shardings is None:
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
        return _restore_pytree(pytree_dir, ocp.args.PyTreeRestore(restore_args=restore_args))
    target = pure_dicts(abstract) if abstract is not None else stored
    _check_against_stored(pytree_dir, stored, target)
    if shardings is not None:
        shardings = pure_dicts(shardings)
        target = jax.tree.map(
            lambda t, s: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=s), target, shardings
        )
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    restore_args = jax.tree.map(
        lambda t: ocp.ArrayRestoreArgs(
            sharding=getattr(t, "sharding", None) or device, global_shape=t.shape, dtype=t.dtype),
        target,
    )
    return _restore_pytree(pytree_dir, ocp.args.PyTreeRestore(item=target, restore_args=restore_args))


def load_params(
    directory: str | epath.PathLike,
    abstract: Any = None,
    shardings: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restores ``(params, metadata)``.

    - neither ``abstract`` nor ``shardings``: params come back as host numpy arrays
      with their stored dtypes;
    - ``abstract``: a tree (or nnx.State) of jax.ShapeDtypeStruct; arrays are cast to
      its dtypes and placed with its shardings (a single device where none is given);
    - ``shardings``: a tree (or nnx.State) of NamedSharding; overrides the abstract
      tree's shardings, or restores stored shapes/dtypes directly onto the mesh.

    Params are always returned as nested dicts; ``nnx.update(model, params)`` or
    ``nnx.replace_by_pure_dict(state, params)`` puts them into a module.
    """
    metadata = read_metadata(directory)
    return read_pytree(params_pytree(directory), abstract, shardings), metadata
