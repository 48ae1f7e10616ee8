"""``liquid_jax.load``: a Liquid language model from a checkpoint, a training run or a
Hugging Face directory; ``liquid_jax.load_vqgan``: an image codec from a VQGAN checkpoint.

``load_vqgan(path)`` accepts
- a liquid_jax VQGAN checkpoint directory (``liquid_jax.json`` with kind "vqgan"),
- a ``liquid-jax train-vqgan`` workdir (its final model, ``<workdir>/vqgan``),
- Chameleon's / taming's ``vqgan.ckpt`` (or a ``.safetensors`` with the same keys) with
  its ``vqgan.yaml`` (next to it, or passed as ``yaml_path``), or a directory holding both,
- a Hugging Face ChameleonVQVAE directory (encoder only: ``decode`` raises).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from liquid_jax import paths
from liquid_jax.checkpoint import model as model_checkpoint
from liquid_jax.checkpoint.card import is_checkpoint
from liquid_jax.checkpoint.train_state import is_workdir
from liquid_jax.checkpoint.vqgan import find_vqgan, load_vqgan_checkpoint
from liquid_jax.codec import ImageCodec
from liquid_jax.convert import hf
from liquid_jax.convert.vqgan import load_converted
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.image_format import ImageFormat
from liquid_jax.model.transformer import Transformer, abstract_model
from liquid_jax.model.vqgan import VQGAN
from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES
from liquid_jax.sample import lm_sampling
from liquid_jax.tokenizer.text import load_text_tokenizer
from liquid_jax.tokenizer.vocab import MultimodalVocab


@functools.partial(jax.jit, static_argnums=(0, 1))
def _real_vocab_logits(graphdef: nnx.GraphDef, vocab_size: int, state: nnx.State, tokens: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    hidden, _ = model.hidden_states(tokens)
    return model.project(hidden, 0, vocab_size)


class LiquidLM:
    """A loaded model: ``config``, ``model`` (the NNX Transformer), ``vocab`` (the
    MultimodalVocab: text tokenizer and image codes; None without tokenizer files),
    ``image`` (the ImageFormat it was trained with: size prefix, pixels per code, grids,
    VQGAN) and ``mesh`` (or None)."""

    def __init__(
        self,
        config: TransformerConfig,
        model: Transformer,
        vocab: MultimodalVocab | None,
        mesh: jax.sharding.Mesh | None = None,
        image: ImageFormat | None = None,
    ):
        self.config = config
        self.model = model
        self.vocab = vocab
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
        return lm_sampling.generate_images(self, prompts, codec, **kwargs)

    def caption_images(self, images, max_new_tokens: int = 64, **kwargs):
        """Captions of images (files, PIL images, pixels or codes). Arguments: see
        ``liquid_jax.sample.lm_sampling.caption_images``."""
        return lm_sampling.caption_images(self, images, max_new_tokens, **kwargs)

    def generate_text(self, prompts, max_new_tokens: int = 128, **kwargs):
        """Text generation or image understanding: token ids and text per prompt.
        Arguments: see ``liquid_jax.sample.lm_sampling.generate_text``."""
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
    model_checkpoint.check_dtype(dtype)
    kwargs = dict(dtype=dtype, mesh=mesh, vocab_pad_multiple=vocab_pad_multiple)
    if is_checkpoint(path):
        config, image, params = model_checkpoint.load_model(path, **kwargs)
        tokenizer_dir = model_checkpoint.tokenizer_dir(path)
    elif is_workdir(path):
        _, config, image, params = model_checkpoint.load_workdir(path, step=step, **kwargs)
        tokenizer_dir = model_checkpoint.tokenizer_dir(path)
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


def load_vqgan_model(path: str | os.PathLike, yaml_path: str | None = None) -> VQGAN:
    """A VQGAN module from any supported checkpoint (see module docstring)."""
    ours = find_vqgan(path)
    if ours is not None:
        return load_vqgan_checkpoint(ours)
    return load_converted(paths.local(path, "VQGAN checkpoint"), yaml_path)


def load_vqgan(path: str | os.PathLike, *, yaml_path: str | None = None, batch_size: int = 8,
               dtype: str | None = None, mesh: jax.sharding.Mesh | None = None) -> ImageCodec:
    """An ImageCodec for a liquid_jax, Chameleon/taming or Hugging Face VQGAN checkpoint."""
    return ImageCodec(load_vqgan_model(path, yaml_path), batch_size=batch_size, dtype=dtype, mesh=mesh)
