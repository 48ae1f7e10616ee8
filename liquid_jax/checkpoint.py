"""The project's checkpoint format: an Orbax PyTree of parameters plus a JSON card.

Layout of a checkpoint directory::

    <directory>/params/          Orbax PyTree checkpoint (nested dict of arrays)
    <directory>/liquid_jax.json  {"kind": ..., "format_version": 1, "config": {...}, ...}

Writes are atomic: everything goes into a hidden sibling directory that is renamed
to ``<directory>`` only after the last byte is written, so a failed save leaves
nothing at the destination. Paths may be local or any ``etils.epath`` URL (gs://).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

FORMAT_VERSION = 1
METADATA_FILE = "liquid_jax.json"
PARAMS_DIR = "params"


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def to_pure_tree(tree: Any) -> Any:
    """An nnx.State (or nested mapping holding nnx.Variables) as plain nested dicts."""
    if isinstance(tree, nnx.Variable):
        return tree.get_value()
    if isinstance(tree, (nnx.State, Mapping)):
        return {k: to_pure_tree(v) for k, v in tree.items()}
    return tree


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
    directory = epath.Path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"destination {directory} already exists")
    tmp = _temporary_sibling(directory)
    primary = jax.process_index() == 0
    if primary and tmp.exists():
        tmp.rmtree()
    _sync("liquid_jax_atomic_directory_clean")
    try:
        if primary:
            tmp.mkdir(parents=True)
        _sync("liquid_jax_atomic_directory_mkdir")
        yield tmp
        _sync("liquid_jax_atomic_directory_written")
        if primary:
            if directory.exists():
                directory.rmtree()
            tmp.rename(directory)
    except BaseException:
        if primary and tmp.exists():
            tmp.rmtree()
        raise
    _sync("liquid_jax_atomic_directory_done")


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
    writing at once (host memory on top of ``params``; jax.Array leaves only, numpy
    leaves are copied whole); None uses Orbax's defaults. Every process of a multi-host job must call this with its shards of
    the same global arrays.
    """
    if "kind" not in metadata:
        raise ValueError(f"checkpoint metadata for {directory} needs a 'kind' entry")
    card = {**metadata, "format_version": FORMAT_VERSION}
    text = json.dumps(card, indent=2, sort_keys=True)  # fail before writing anything
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        handler = ocp.PyTreeCheckpointHandler(
            save_concurrent_gb=max_inflight_gb, save_device_host_concurrent_gb=max_inflight_gb
        )
        with ocp.Checkpointer(handler) as checkpointer:
            checkpointer.save(tmp / PARAMS_DIR, args=ocp.args.PyTreeSave(to_pure_tree(params)))
        if jax.process_index() == 0:
            for name, source in (extra_files or {}).items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                epath.Path(source).copy(target)
            (tmp / METADATA_FILE).write_text(text)


def read_metadata(directory: str | epath.PathLike) -> dict[str, Any]:
    """The JSON card of a checkpoint; raises FileNotFoundError for non-checkpoints."""
    path = epath.Path(directory) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a liquid_jax checkpoint: no {METADATA_FILE}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}")
    return card


def stored_shapes(directory: str | epath.PathLike) -> dict[str, Any]:
    """Nested dict of jax.ShapeDtypeStruct (no sharding) describing the stored arrays."""
    meta = ocp.PyTreeCheckpointer().metadata(epath.Path(directory) / PARAMS_DIR)
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype)),
        to_pure_tree(meta.item_metadata.tree),
    )


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
    directory = epath.Path(directory)
    metadata = read_metadata(directory)
    path = directory / PARAMS_DIR
    stored = stored_shapes(directory)
    if abstract is None and shardings is None:
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
        params = ocp.PyTreeCheckpointer().restore(
            path, args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
        return params, metadata

    target = to_pure_tree(abstract) if abstract is not None else stored
    _check_against_stored(directory, stored, target)
    if shardings is not None:
        shardings = to_pure_tree(shardings)
        target = jax.tree.map(
            lambda t, s: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=s), target, shardings
        )
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda t: t if getattr(t, "sharding", None) is not None
        else jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=device),
        target,
    )
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(path, target)
    return params, metadata
