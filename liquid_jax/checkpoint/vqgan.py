"""VQGAN checkpoints of ours: a card (kind "vqgan") and the parameters, in a directory
of their own or as the final model of a ``liquid-jax train-vqgan`` workdir
(``<workdir>/vqgan``)."""

from __future__ import annotations

import os
from typing import Any

import jax
from flax import nnx

from liquid_jax import paths
from liquid_jax.checkpoint import card as card_lib
from liquid_jax.checkpoint import directory as ckpt_dir
from liquid_jax.checkpoint.train_state import CHECKPOINT_DIR
from liquid_jax.errors import UserError
from liquid_jax.model.vqgan import VQGAN

WORKDIR_MODEL = "vqgan"  # where ``liquid-jax train-vqgan`` writes its final model in the workdir


def save_vqgan(directory: str | os.PathLike, model: VQGAN, extra: dict[str, Any] | None = None,
               overwrite: bool = False) -> None:
    """Writes a VQGAN checkpoint: its parameters and card (``extra`` added to the card)."""
    card = card_lib.make_vqgan_card(model.config, model.has_decoder, **(extra or {}))
    ckpt_dir.save_params(directory, nnx.state(model, nnx.Param), card, overwrite=overwrite)


def find_vqgan(path: str | os.PathLike) -> str | os.PathLike | None:
    """The VQGAN checkpoint of ours at ``path``: ``path`` itself or a train-vqgan
    workdir's final model; None when ``path`` holds neither (another format)."""
    resolved = paths.resolve(path)
    if card_lib.is_checkpoint(resolved):
        return path
    if card_lib.is_checkpoint(resolved / WORKDIR_MODEL):
        return resolved / WORKDIR_MODEL
    if (resolved / CHECKPOINT_DIR).is_dir():
        raise UserError(f"{path} is a VQGAN training workdir whose run has not finished: its model is "
                        f"written to {resolved / WORKDIR_MODEL} at the last step; run train-vqgan to the end")
    return None


def load_vqgan_checkpoint(directory: str | os.PathLike) -> VQGAN:
    """The VQGAN of a checkpoint directory of ours."""
    params, card = ckpt_dir.load_params(directory)
    config, has_decoder = card_lib.read_vqgan_card(card, directory)
    model = nnx.eval_shape(lambda: VQGAN(config, rngs=nnx.Rngs(0), with_decoder=has_decoder))
    graphdef, _ = nnx.split(model)
    abstract = nnx.state(model, nnx.Param)
    try:
        nnx.replace_by_pure_dict(abstract, params)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{directory}: parameters do not match the stored config ({e})") from e
    for path, var in nnx.to_flat_state(abstract):
        if isinstance(var.get_value(), jax.ShapeDtypeStruct):
            raise ValueError(f"{directory}: missing tensor {'/'.join(map(str, path))}")
    return nnx.merge(graphdef, abstract)
