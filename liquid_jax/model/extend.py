"""Vocabulary surgery on parameter trees: adding image-code rows and changing padding.

Tables are the input embedding ``embed/embedding`` and, when untied, the output
``lm_head/weight``, both [padded_vocab_size, d_model]. Rows ``>= vocab_size`` are
padding: always zero, masked out of the logits and never exported.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES

TABLE_PATHS = (("embed", "embedding"), ("lm_head", "weight"))


def _tables(config: TransformerConfig) -> tuple[tuple[str, str], ...]:
    return TABLE_PATHS[:1] if config.tie_embeddings else TABLE_PATHS


def extended_table(table: Any, real_rows: int, new_rows: int, padded_rows: int) -> Any:
    """``table[:real_rows]``, then ``new_rows`` copies of its float32 mean, then zero rows
    up to ``padded_rows``; numpy in, numpy out; jax in, jax out with the same sharding."""
    xp = np if isinstance(table, np.ndarray) else jnp
    real = table[:real_rows]
    parts = [real]
    if new_rows:
        mean = xp.mean(real.astype(np.float32), axis=0, keepdims=True).astype(table.dtype)
        parts.append(xp.broadcast_to(mean, (new_rows, table.shape[1])))
    pad = padded_rows - real_rows - new_rows
    if pad:
        parts.append(xp.zeros((pad, table.shape[1]), table.dtype))
    out = xp.concatenate(parts, axis=0)
    sharding = getattr(table, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        out = jax.device_put(out, sharding)
    return out


def _replace_tables(config: TransformerConfig, params: dict[str, Any], new_config: TransformerConfig,
                    new_rows: int) -> dict[str, Any]:
    out = dict(params)
    for outer, inner in _tables(config):
        if outer not in params or inner not in params[outer]:
            raise KeyError(f"params have no {outer}/{inner} table")
        table = params[outer][inner]
        if table.shape[0] != config.padded_vocab_size:
            raise ValueError(
                f"params {outer}/{inner} has {table.shape[0]} rows, the config expects "
                f"padded_vocab_size {config.padded_vocab_size}"
            )
        out[outer] = {**params[outer], inner: extended_table(
            table, config.vocab_size, new_rows, new_config.padded_vocab_size)}
    return out


def extend_vocab(
    config: TransformerConfig, params: dict[str, Any], num_codes: int = DEFAULT_NUM_IMAGE_CODES
) -> tuple[TransformerConfig, dict[str, Any]]:
    """Appends ``num_codes`` image-code tokens after the text vocabulary.

    New rows of the input embedding (and of the LM head when untied) are the mean of
    the existing real rows, as upstream Liquid initialises them. Other parameters are
    shared with ``params``, not copied.
    """
    if config.num_image_codes:
        raise ValueError(
            f"the model already has {config.num_image_codes} image codes (vocab_size "
            f"{config.vocab_size}); extending again would shift every code"
        )
    if num_codes <= 0:
        raise ValueError(f"num_codes must be positive, got {num_codes}")
    new_config = config.replace(vocab_size=config.vocab_size + num_codes, num_image_codes=num_codes)
    return new_config, _replace_tables(config, params, new_config, num_codes)


def set_vocab_padding(
    config: TransformerConfig, params: dict[str, Any], multiple: int
) -> tuple[TransformerConfig, dict[str, Any]]:
    """Re-pads the vocabulary tables to a multiple of ``multiple`` rows (zeros)."""
    if multiple < 1:
        raise ValueError(f"vocab_pad_multiple must be >= 1, got {multiple}")
    new_config = config.replace(vocab_pad_multiple=multiple)
    return new_config, _replace_tables(config, params, new_config, 0)
