"""From a training run to a model: ``liquid-jax export``.

Every checkpoint step of a workdir holds the model card next to the parameters, and the
trainer keeps the tokenizer's files in ``<workdir>/tokenizer``; so a step is a model. An
export writes the card, the tokenizer and the parameters of one step (the newest intact
one by default) as a liquid_jax checkpoint or a Hugging Face directory, without the
optimizer state. ``liquid_jax.load`` and the ``sample`` commands read a workdir directly
(``liquid_jax.checkpoint.model.load_workdir``).
"""

from __future__ import annotations

import os

from liquid_jax import paths
from liquid_jax.checkpoint import model as model_checkpoint
from liquid_jax.convert import hf
from liquid_jax.model.config import TransformerConfig

FORMATS = ("liquid", "hf")


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
    found, config, image, params = model_checkpoint.load_workdir(workdir, step=step, dtype=dtype)
    tokenizer = model_checkpoint.tokenizer_dir(workdir)
    if to == "hf":
        hf.export_hf(config, params, output, image=image, tokenizer_dir=tokenizer, overwrite=overwrite)
    else:
        model_checkpoint.save_model(output, config, image, params, tokenizer=tokenizer,
                                    source=f"training run {paths.resolve(workdir).name}, step {found}",
                                    overwrite=overwrite)
    return found, config
