"""``liquid_jax.load``: a Liquid language model from a checkpoint, a training run or a
Hugging Face directory."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from liquid_jax import lm_checkpoint
from liquid_jax.convert import hf
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.extend import DEFAULT_NUM_IMAGE_CODES
from liquid_jax.model.image_format import ImageFormat
from liquid_jax.model.transformer import Transformer, abstract_model
from liquid_jax.tokenizer.text import load_text_tokenizer
from liquid_jax.tokenizer.vocab import MultimodalVocab
from liquid_jax.train import export


@functools.partial(jax.jit, static_argnums=(0, 1))
def _real_vocab_logits(graphdef: nnx.GraphDef, vocab_size: int, state: nnx.State, tokens: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    hidden, _ = model.hidden_states(tokens)
    return model.project(hidden, 0, vocab_size)


class LiquidLM:
    """A loaded model: ``config``, ``model`` (the NNX Transformer), ``tokenizer``
    (MultimodalVocab, or None without tokenizer files), ``image`` (the ImageFormat it
    was trained with: size prefix, pixels per code, grids, VQGAN) and ``mesh`` (or None)."""

    def __init__(
        self,
        config: TransformerConfig,
        model: Transformer,
        tokenizer: MultimodalVocab | None,
        mesh: jax.sharding.Mesh | None = None,
        image: ImageFormat | None = None,
    ):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.mesh = mesh
        self.image = image if image is not None else ImageFormat()
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

    def caption_images(self, images, max_new_tokens: int = 64, **kwargs):
        """Captions of images (files, PIL images, pixels or codes). Arguments: see
        ``liquid_jax.sample.lm_sampling.caption_images``."""
        from liquid_jax.sample import lm_sampling

        return lm_sampling.caption_images(self, images, max_new_tokens, **kwargs)

    def generate_text(self, prompts, max_new_tokens: int = 128, **kwargs):
        """Text generation or image understanding: token ids and text per prompt.
        Arguments: see ``liquid_jax.sample.lm_sampling.generate_text``."""
        from liquid_jax.sample import lm_sampling

        return lm_sampling.generate_text(self, prompts, max_new_tokens, **kwargs)


def _merge(config: TransformerConfig, params: dict[str, Any]) -> Transformer:
    graphdef, state = nnx.split(abstract_model(config))
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def load(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    mesh: jax.sharding.Mesh | None = None,
    extend_image_codes: int = DEFAULT_NUM_IMAGE_CODES,
    vocab_pad_multiple: int | None = None,
    step: int | None = None,
    progress: bool = True,
) -> LiquidLM:
    """Loads a liquid_jax checkpoint, a training workdir (checkpoint ``step``, by default
    its newest intact one) or a Hugging Face directory (converted on the fly).

    ``dtype``: parameter and compute dtype ("float32" or "bfloat16"). ``mesh``: place
    parameters sharded by their logical axes. ``extend_image_codes``: image-code rows
    added to a Hugging Face text model (0 keeps it text-only; a model that already
    has image codes is never extended). ``vocab_pad_multiple``: pad the vocabulary
    tables (e.g. 128 on TPU); default keeps the stored padding. Paths may be relative,
    absolute or URL-style (gs://; Hugging Face directories are local).
    """
    if dtype not in lm_checkpoint.DTYPES:
        raise ValueError(f"dtype must be one of {lm_checkpoint.DTYPES}, got {dtype!r}")
    kwargs = dict(dtype=dtype, mesh=mesh, vocab_pad_multiple=vocab_pad_multiple)
    if lm_checkpoint.is_model_checkpoint(path):
        config, image, params = lm_checkpoint.load_model(path, **kwargs)
        tokenizer_dir = lm_checkpoint.tokenizer_dir(path)
    elif export.is_workdir(path):
        _, config, image, params = export.load_workdir(path, step=step, **kwargs)
        tokenizer_dir = lm_checkpoint.tokenizer_dir(path)
    elif hf.is_hf_dir(path):
        config, params = hf.load_hf_params(
            path, dtype=dtype, extend_image_codes=extend_image_codes,
            vocab_pad_multiple=vocab_pad_multiple or 1, mesh=mesh, progress=progress,
        )
        image = hf.hf_image_format(path)
        tokenizer_dir = hf.tokenizer_location(path)
    else:
        raise FileNotFoundError(
            f"{os.fspath(path)} is neither a liquid_jax checkpoint, a training workdir with a finished "
            f"checkpoint, nor a Hugging Face model directory ({hf.CONFIG_FILE})"
        )
    text = None if tokenizer_dir is None else load_text_tokenizer(os.fspath(tokenizer_dir))
    vocab = None if text is None else MultimodalVocab(
        text, config.special_tokens, config.text_vocab_size, config.num_image_codes
    )
    return LiquidLM(config, _merge(config, params), vocab, mesh, image)
