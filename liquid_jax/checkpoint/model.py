"""Language-model checkpoints of ours: a card, the tokenizer's files and the parameters.

Layout (``liquid_jax.checkpoint.directory`` for the generic part,
``liquid_jax.checkpoint.card`` for the card)::

    <directory>/liquid_jax.json   the card: kind, config, image format, source
    <directory>/tokenizer/        the text tokenizer's files
    <directory>/params/           Orbax PyTree of parameters

``save_model`` writes one; ``load_model`` reads one in any dtype, sharded over a mesh,
with another vocabulary padding; ``load_workdir`` reads the model of a training step
(``liquid_jax.checkpoint.train_state``) the same way.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
from etils import epath
from flax import nnx

from liquid_jax import paths
from liquid_jax.checkpoint import directory as ckpt_dir
from liquid_jax.checkpoint.card import TOKENIZER_SUBDIR, make_card, read_card, read_metadata
from liquid_jax.checkpoint.trees import nested, pure_dicts
from liquid_jax.checkpoint.train_state import CHECKPOINT_DIR, NoCheckpointError, TrainCheckpointer, is_workdir
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.extend import set_vocab_padding
from liquid_jax.model.image_format import ImageFormat
from liquid_jax.model.transformer import abstract_model
from liquid_jax.sharding import state_shardings
from liquid_jax.tokenizer.text import tokenizer_files

DTYPES = ("float32", "bfloat16")


def check_dtype(dtype: str) -> None:
    """Raises ValueError unless ``dtype`` is one parameters are stored and loaded in."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")


def tokenizer_dir(directory: str | os.PathLike) -> epath.Path | None:
    """The ``tokenizer/`` folder of a checkpoint or workdir, when it holds tokenizer files."""
    folder = paths.resolve(directory) / TOKENIZER_SUBDIR
    return folder if folder.is_dir() and tokenizer_files(os.fspath(folder)) else None


def tokenizer_assets(folder: str | os.PathLike | None) -> dict[str, str]:
    """``{"tokenizer/<name>": source path}`` for ``save_model``'s extra files."""
    if folder is None:
        return {}
    return {f"{TOKENIZER_SUBDIR}/{n}": os.path.join(os.fspath(folder), n) for n in tokenizer_files(os.fspath(folder))}


def save_model(
    directory: str | os.PathLike,
    config: TransformerConfig,
    image: ImageFormat,
    params: Any | Iterable[Any],
    *,
    tokenizer: str | os.PathLike | None,
    source: str,
    streaming: bool = False,
    overwrite: bool = False,
) -> None:
    """Writes a checkpoint atomically; ``params`` is a nested dict (or, with
    ``streaming``, an iterable of disjoint parts written one by one); ``tokenizer`` a
    folder whose tokenizer files are copied (None: none)."""
    parts = params if streaming else [params]
    ckpt_dir.save_params_streaming(
        directory, parts, make_card(config, image, source=source),
        extra_files=tokenizer_assets(tokenizer), overwrite=overwrite,
    )


def read_model_card(directory: str | os.PathLike) -> tuple[TransformerConfig, ImageFormat]:
    """(config, image format) of a checkpoint directory."""
    return read_card(read_metadata(directory), directory)


def place_on_mesh(config: TransformerConfig, params: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """Moves a nested dict of host arrays onto ``mesh`` with the shardings of their
    logical axes, one tensor at a time (each host array is dropped once placed)."""
    shardings = pure_dicts(state_shardings(nnx.state(abstract_model(config)), mesh))

    def place(tree: dict[str, Any], where: dict[str, Any]) -> None:
        for key in list(tree):
            if isinstance(tree[key], dict):
                place(tree[key], where[key])
            else:
                tree[key] = jax.device_put(tree.pop(key), where[key])

    place(params, shardings)
    return params


def load_pytree_model(
    card: dict[str, Any],
    pytree_dir: str | os.PathLike,
    where: Any,
    *,
    dtype: str = "float32",
    mesh: jax.sharding.Mesh | None = None,
    vocab_pad_multiple: int | None = None,
) -> tuple[TransformerConfig, ImageFormat, dict[str, Any]]:
    """(config, image format, params) of a card and an Orbax PyTree of its parameters.

    ``dtype``: parameter and compute dtype; ``mesh``: params sharded by their logical
    axes; ``vocab_pad_multiple``: re-pad the vocabulary tables (None keeps the stored
    padding). ``where`` names the checkpoint in errors.
    """
    check_dtype(dtype)
    config, image = read_card(card, where)
    config = config.replace(dtype=dtype, param_dtype=dtype)
    if vocab_pad_multiple and vocab_pad_multiple != config.vocab_pad_multiple:
        # Re-pad on the host: the stored row count may not split evenly over the mesh.
        params = jax.tree.map(lambda a: a.astype(jnp.dtype(dtype)), ckpt_dir.read_pytree(pytree_dir))
        config, params = set_vocab_padding(config, params, vocab_pad_multiple)
        return config, image, params if mesh is None else place_on_mesh(config, params, mesh)
    abstract = nnx.state(abstract_model(config))
    shardings = state_shardings(abstract, mesh) if mesh is not None else None
    return config, image, ckpt_dir.read_pytree(pytree_dir, abstract=abstract, shardings=shardings)


def load_model(
    directory: str | os.PathLike, **kwargs: Any
) -> tuple[TransformerConfig, ImageFormat, dict[str, Any]]:
    """(config, image format, params) of a checkpoint directory; ``kwargs`` as in
    ``load_pytree_model``."""
    return load_pytree_model(read_metadata(directory), ckpt_dir.params_pytree(directory), directory, **kwargs)


def load_workdir(
    workdir: str | os.PathLike,
    *,
    step: int | None = None,
    dtype: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    vocab_pad_multiple: int | None = None,
) -> tuple[int, TransformerConfig, ImageFormat, dict[str, Any]]:
    """(step, config, image format, params) of checkpoint ``step`` of a training workdir,
    or of its newest intact one (a damaged newer step is reported and passed by).
    ``dtype`` None keeps the trained parameter dtype; the rest as in ``load_pytree_model``."""
    if not is_workdir(workdir):
        raise NoCheckpointError(f"{workdir} is not a training workdir: it has no finished checkpoint in "
                                f"{CHECKPOINT_DIR}/; give the --workdir of a liquid-jax train run")
    checkpointer = TrainCheckpointer(workdir, read_only=True)

    def load(card: dict[str, Any], pytree_dir) -> tuple[TransformerConfig, ImageFormat, dict[str, Any]]:
        want = dtype or read_card(card, workdir)[0].param_dtype
        return load_pytree_model(card, pytree_dir, workdir, dtype=want, mesh=mesh,
                                 vocab_pad_multiple=vocab_pad_multiple)

    try:
        found, (config, image, params) = checkpointer.restore_model(step, load)
    finally:
        checkpointer.close()
    return found, config, image, params


def workdir_image_format(workdir: str | os.PathLike) -> ImageFormat:
    """The image format on the card of a training workdir's newest intact step."""
    checkpointer = TrainCheckpointer(workdir, read_only=True)
    try:
        return checkpointer.restore_model(None, lambda card, _: read_card(card, workdir)[1])[1]
    finally:
        checkpointer.close()


def nested_parts(items: Iterator[tuple[tuple[str, ...], Any]]) -> Iterator[dict[str, Any]]:
    """``(path, array)`` pairs as the one-leaf nested dicts ``save_model`` streams."""
    for path, value in items:
        yield nested(path, value)
        del value  # released before the next parameter is produced
