"""``liquid_jax.load``: a Liquid language model from a checkpoint or Hugging Face directory."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from liquid_jax import checkpoint
from liquid_jax.convert import hf
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.extend import DEFAULT_NUM_IMAGE_CODES, set_vocab_padding
from liquid_jax.model.transformer import Transformer, abstract_model
from liquid_jax.sharding import state_shardings
from liquid_jax.tokenizer.vocab import MultimodalVocab


@functools.partial(jax.jit, static_argnums=(0, 1))
def _real_vocab_logits(graphdef: nnx.GraphDef, vocab_size: int, state: nnx.State, tokens: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    hidden, _ = model.hidden_states(tokens)
    return model.project(hidden, 0, vocab_size)


class LiquidLM:
    """A loaded model: ``config``, ``model`` (the NNX Transformer), ``tokenizer``
    (MultimodalVocab, or None without tokenizer files) and ``mesh`` (or None)."""

    def __init__(
        self,
        config: TransformerConfig,
        model: Transformer,
        tokenizer: MultimodalVocab | None,
        mesh: jax.sharding.Mesh | None = None,
    ):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.mesh = mesh

    def _mesh_context(self):
        return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    def logits(self, tokens: Any) -> jax.Array:
        """float32 logits [B, T, vocab_size] over the real (unpadded) vocabulary."""
        tokens = jnp.asarray(tokens, jnp.int32)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"token ids span [{low}, {high}], outside [0, {self.config.vocab_size})")
        graphdef, state = nnx.split(self.model)
        with self._mesh_context():
            return _real_vocab_logits(graphdef, self.config.vocab_size, state, tokens)

    def generate_images(self, prompts, codec=None, **kwargs):
        """Text-to-image with guidance: codes [N, h*w] and, with a VQGAN ``codec``, uint8
        images. Arguments: see ``liquid_jax.sample.lm_sampling.generate_images``."""
        from liquid_jax.sample import lm_sampling

        return lm_sampling.generate_images(self, prompts, codec, **kwargs)

    def generate_text(self, prompts, max_new_tokens: int = 128, **kwargs):
        """Text generation or image understanding: token ids and text per prompt.
        Arguments: see ``liquid_jax.sample.lm_sampling.generate_text``."""
        from liquid_jax.sample import lm_sampling

        return lm_sampling.generate_text(self, prompts, max_new_tokens, **kwargs)


def _merge(config: TransformerConfig, params: dict[str, Any]) -> Transformer:
    graphdef, state = nnx.split(abstract_model(config))
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def _load_checkpoint(
    path: str, dtype: str, mesh: jax.sharding.Mesh | None, vocab_pad_multiple: int | None
) -> tuple[TransformerConfig, dict[str, Any]]:
    metadata = checkpoint.read_metadata(path)
    config = hf.config_from_metadata(metadata, path).replace(dtype=dtype, param_dtype=dtype)
    if vocab_pad_multiple and vocab_pad_multiple != config.vocab_pad_multiple:
        # Re-pad on the host: the stored row count may not split evenly over the mesh.
        params, _ = checkpoint.load_params(path)
        params = jax.tree.map(lambda a: a.astype(jnp.dtype(dtype)), params)
        config, params = set_vocab_padding(config, params, vocab_pad_multiple)
        return config, params if mesh is None else hf.place_on_mesh(config, params, mesh)
    abstract = nnx.state(abstract_model(config))
    shardings = state_shardings(abstract, mesh) if mesh is not None else None
    params, _ = checkpoint.load_params(path, abstract=abstract, shardings=shardings)
    return config, params


def load(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    mesh: jax.sharding.Mesh | None = None,
    extend_image_codes: int = DEFAULT_NUM_IMAGE_CODES,
    vocab_pad_multiple: int | None = None,
    progress: bool = True,
) -> LiquidLM:
    """Loads a liquid_jax checkpoint or a Hugging Face directory (converted on the fly).

    ``dtype``: parameter and compute dtype ("float32" or "bfloat16"). ``mesh``: place
    parameters sharded by their logical axes. ``extend_image_codes``: image-code rows
    added to a Hugging Face text model (0 keeps it text-only; a model that already
    has image codes is never extended). ``vocab_pad_multiple``: pad the vocabulary
    tables (e.g. 128 on TPU); default keeps the stored padding.
    """
    path = os.fspath(path)
    if dtype not in hf.DTYPES:
        raise ValueError(f"dtype must be one of {hf.DTYPES}, got {dtype!r}")
    if os.path.exists(os.path.join(path, checkpoint.METADATA_FILE)):
        config, params = _load_checkpoint(path, dtype, mesh, vocab_pad_multiple)
    elif os.path.exists(os.path.join(path, hf.CONFIG_FILE)):
        config, params = hf.load_hf_params(
            path, dtype=dtype, extend_image_codes=extend_image_codes,
            vocab_pad_multiple=vocab_pad_multiple or 1, mesh=mesh, progress=progress,
        )
    else:
        raise FileNotFoundError(
            f"{path} is neither a liquid_jax checkpoint ({checkpoint.METADATA_FILE}) nor a "
            f"Hugging Face model directory ({hf.CONFIG_FILE})"
        )
    text = hf.load_tokenizer_if_present(path)
    vocab = None if text is None else MultimodalVocab(
        text, config.special_tokens, config.text_vocab_size, config.num_image_codes
    )
    return LiquidLM(config, _merge(config, params), vocab, mesh)

