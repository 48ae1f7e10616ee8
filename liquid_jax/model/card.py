"""The card of a liquid_jax language-model checkpoint: what it records besides parameters.

``<checkpoint>/liquid_jax.json`` (see ``liquid_jax.checkpoint``) holds::

    {"kind": "transformer", "config": TransformerConfig fields,
     "image": ImageFormat fields, "source": where it came from, ...}

and ``<checkpoint>/tokenizer/`` the text tokenizer's files. Training checkpoints store
the same card next to their parameters, so an export is the card, the tokenizer and
the parameters of one step.
"""

from __future__ import annotations

from typing import Any, Mapping

from liquid_jax.errors import UserError
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.image_format import ImageFormat

KIND = "transformer"
TOKENIZER_SUBDIR = "tokenizer"  # where a checkpoint keeps its tokenizer files


def make_card(config: TransformerConfig, image: ImageFormat, **extra: Any) -> dict[str, Any]:
    """The JSON card of a model with ``config`` and ``image`` format."""
    return {"kind": KIND, "config": config.to_dict(), "image": image.to_dict(), **extra}


def read_card(card: Mapping[str, Any], where: Any) -> tuple[TransformerConfig, ImageFormat]:
    """(config, image format) of a card; ``where`` names its checkpoint in errors."""
    if card.get("kind") != KIND:
        raise UserError(f"{where} holds a {card.get('kind')!r} checkpoint, not a language model ({KIND!r})")
    try:
        return TransformerConfig.from_dict(card["config"]), ImageFormat.from_dict(card.get("image", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: the checkpoint card is damaged ({e})") from e
