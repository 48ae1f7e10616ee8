"""Field names of earlier versions that files on disk may still hold, and their names now
(README "Names"). Readers pass what they load through ``current``."""

from __future__ import annotations

from typing import Any, Mapping

VQGAN_CONFIG = {"n_embed": "num_image_codes"}  # VQGAN cards, train-vqgan checkpoints' run configs
MANIFEST_VQGAN = {"codebook_size": "num_image_codes"}  # "vqgan" of a shard folder's dataset.json
EVAL_GENERATE_SETTINGS = {"cfg": "guidance_scale"}  # eval_generate.json of ``liquid-jax eval generate``


def current(fields: Mapping[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """``fields`` with the names of earlier versions (``renamed``: former -> current) replaced."""
    return {renamed.get(k, k): v for k, v in fields.items()}
