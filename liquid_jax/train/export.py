"""From a training run to a model: ``liquid-jax export`` and loading a workdir.

Every checkpoint step of a workdir holds the model card next to the parameters, and the
trainer keeps the tokenizer's files in ``<workdir>/tokenizer``; so a step is a model. An
export writes the card, the tokenizer and the parameters of one step (the newest intact
one by default) as a liquid_jax checkpoint or a Hugging Face directory, without the
optimizer state. ``liquid_jax.load`` and the ``sample`` commands read a workdir directly.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from liquid_jax import lm_checkpoint, paths
from liquid_jax.convert import hf
from liquid_jax.model.card import read_card
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.image_format import ImageFormat
from liquid_jax.train.checkpointing import CHECKPOINT_DIR, NoCheckpointError, TrainCheckpointer, is_workdir

FORMATS = ("liquid", "hf")

__all__ = ["FORMATS", "export", "is_workdir", "load_workdir"]


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
    ``dtype`` None keeps the trained parameter dtype; the rest as in
    ``lm_checkpoint.load_pytree_model``."""
    if not is_workdir(workdir):
        raise NoCheckpointError(f"{workdir} is not a training workdir: it has no finished checkpoint in "
                                f"{CHECKPOINT_DIR}/; give the --workdir of a liquid-jax train run")
    checkpointer = TrainCheckpointer(workdir, read_only=True)

    def load(card: dict[str, Any], pytree_dir) -> tuple[TransformerConfig, ImageFormat, dict[str, Any]]:
        want = dtype or read_card(card, workdir)[0].param_dtype
        return lm_checkpoint.load_pytree_model(card, pytree_dir, workdir, dtype=want, mesh=mesh,
                                               vocab_pad_multiple=vocab_pad_multiple)

    try:
        found, (config, image, params) = checkpointer.restore_model(step, load)
    finally:
        checkpointer.close()
    return found, config, image, params


def export(
    workdir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    step: int | None = None,
    to: str = "liquid",
    dtype: str | None = None,
    overwrite: bool = False,
) -> tuple[int, TransformerConfig]:
    """Writes the model of a training workdir's step (default: newest intact) to
    ``output`` as a liquid_jax checkpoint (``to="liquid"``) or a Hugging Face directory
    (``"hf"``); ``dtype`` None keeps the trained parameter dtype. Returns (step, config)."""
    if to not in FORMATS:
        raise ValueError(f"export format {to!r}; expected one of {FORMATS}")
    found, config, image, params = load_workdir(workdir, step=step, dtype=dtype)
    tokenizer = lm_checkpoint.tokenizer_dir(workdir)
    if to == "hf":
        hf.export_hf(config, params, output, image=image, tokenizer_dir=tokenizer, overwrite=overwrite)
    else:
        lm_checkpoint.save_model(output, config, image, params, tokenizer=tokenizer,
                                 source=f"training run {paths.resolve(workdir).name}, step {found}",
                                 overwrite=overwrite)
    return found, config
