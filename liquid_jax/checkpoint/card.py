"""The card of a checkpoint of ours: ``<checkpoint>/liquid_jax.json``, what it records
besides the parameters.

Every card has a ``kind`` and the ``format_version`` of the layout that wrote it. By kind::

    "transformer"  {"config": TransformerConfig fields, "image": ImageFormat fields,
                    "source": where it came from, ...}
    "vqgan"        {"config": VQGANConfig fields, "has_decoder": bool, ...}

A language model keeps its text tokenizer's files in ``<checkpoint>/tokenizer/``.
Training checkpoints store the language-model card next to their parameters, so an
export is the card, the tokenizer and the parameters of one step.

Format versions: 2 is the current layout (Orbax PyTree under ``params/state``); this
code reads no other.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from etils import epath

from liquid_jax import paths
from liquid_jax.errors import UserError
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.image_format import ImageFormat
from liquid_jax.model.vqgan_config import VQGANConfig

FORMAT_VERSION = 2
METADATA_FILE = "liquid_jax.json"
TOKENIZER_SUBDIR = "tokenizer"  # where a language-model checkpoint keeps its tokenizer files
LM_KIND = "transformer"
VQGAN_KIND = "vqgan"


def card_text(card: Mapping[str, Any], where: Any) -> str:
    """The JSON text of ``card`` with its ``format_version``; raises before anything is
    written when it has no ``kind`` or does not serialise."""
    if "kind" not in card:
        raise ValueError(f"checkpoint metadata for {where} needs a 'kind' entry")
    return json.dumps({**card, "format_version": FORMAT_VERSION}, indent=2, sort_keys=True)


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint directory of ours (of any kind)."""
    return (paths.resolve(path) / METADATA_FILE).exists()


def read_metadata(directory: str | epath.PathLike) -> dict[str, Any]:
    """The card of a checkpoint; raises FileNotFoundError for non-checkpoints."""
    path = paths.resolve(directory) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a liquid_jax checkpoint: no {METADATA_FILE}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from e
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}")
    return card


def _check_kind(card: Mapping[str, Any], kind: str, what: str, where: Any) -> None:
    if card.get("kind") != kind:
        raise UserError(f"{where} holds a {card.get('kind')!r} checkpoint, not {what} ({kind!r})")


def make_card(config: TransformerConfig, image: ImageFormat, **extra: Any) -> dict[str, Any]:
    """The card of a language model with ``config`` and ``image`` format."""
    return {"kind": LM_KIND, "config": config.to_dict(), "image": image.to_dict(), **extra}


def read_card(card: Mapping[str, Any], where: Any) -> tuple[TransformerConfig, ImageFormat]:
    """(config, image format) of a language-model card; ``where`` names its checkpoint in errors."""
    _check_kind(card, LM_KIND, "a language model", where)
    try:
        return TransformerConfig.from_dict(card["config"]), ImageFormat.from_dict(card.get("image", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: the checkpoint card is damaged ({e})") from e


def make_vqgan_card(config: VQGANConfig, has_decoder: bool, **extra: Any) -> dict[str, Any]:
    """The card of a VQGAN with ``config`` (an encoder-only one has no decoder)."""
    return {"kind": VQGAN_KIND, "config": config.to_dict(), "has_decoder": has_decoder, **extra}


def read_vqgan_card(card: Mapping[str, Any], where: Any) -> tuple[VQGANConfig, bool]:
    """(config, has decoder) of a VQGAN card; ``where`` names its checkpoint in errors."""
    _check_kind(card, VQGAN_KIND, "a VQGAN", where)
    return VQGANConfig.from_dict(card["config"]), card.get("has_decoder", True)
