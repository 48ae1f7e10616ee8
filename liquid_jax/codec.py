"""ImageCodec: uint8 images <-> int32 VQGAN codes, jitted, batched, optionally sharded.

``liquid_jax.load_vqgan(path)`` (``liquid_jax.api``) makes one from a VQGAN checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from liquid_jax.model.vqgan import VQGAN
from liquid_jax.sharding import logical_to_spec, pad_to_batch_shards
from liquid_jax.tokenizer.image import to_model_input, to_uint8


class ImageCodec:
    """Encodes uint8 [B, H, W, 3] images to codes [B, h*w] (raster order) and back.

    Work is split into chunks of ``batch_size`` images (the last chunk is padded, so each
    image shape compiles once). With ``mesh``, each chunk is sharded over the mesh's
    batch axes (``data`` and ``fsdp``) and the parameters are replicated.
    ``dtype="bfloat16"`` runs convolutions in bf16; distances to the codebook stay float32.
    """

    def __init__(self, model: VQGAN, *, batch_size: int = 8, dtype: str | None = None,
                 mesh: Mesh | None = None):
        cfg = model.config
        if dtype is not None and dtype != cfg.dtype:
            cfg = cfg.replace(dtype=dtype)
            graphdef, state = nnx.split(model)
            # The codebook keeps its precision: nearest-code search is exact in float32.
            state = jax.tree_util.tree_map_with_path(
                lambda path, a: a if "quantize" in jax.tree_util.keystr(path) else a.astype(dtype), state)
            model = nnx.merge(graphdef, state)
            _retarget_dtype(model, jnp.dtype(dtype))
            model.config = cfg
        self.model = model
        self.config = cfg
        self.mesh = mesh
        if mesh is not None:
            spec = logical_to_spec(("batch",), mesh=mesh)[0]
            self._batch_sharding = NamedSharding(mesh, PartitionSpec(spec))
            replicated = NamedSharding(mesh, PartitionSpec())
            graphdef, state = nnx.split(model)
            model = nnx.merge(graphdef, jax.device_put(state, replicated))
            self.model = model
        self.batch_size = pad_to_batch_shards(max(batch_size, 1), mesh)
        graphdef, state = nnx.split(self.model)
        self._state = state

        def encode_fn(state, pixels):
            m = nnx.merge(graphdef, state)
            codes = m.encode(to_model_input(pixels))
            return codes.reshape(codes.shape[0], -1)

        def decode_fn(state, codes):
            m = nnx.merge(graphdef, state)
            return to_uint8(m.decode(codes))

        self._encode = jax.jit(encode_fn)
        self._decode = jax.jit(decode_fn)

    @property
    def pixels_per_code(self) -> int:
        return self.config.pixels_per_code

    @property
    def num_image_codes(self) -> int:
        return self.config.num_image_codes

    @property
    def has_decoder(self) -> bool:
        return self.model.has_decoder

    @functools.cached_property
    def fingerprint(self) -> str:
        """First 16 hex digits of the SHA-256 of the float32 codebook: names the VQGAN whose
        codes a shard or a model holds, whatever file format it was loaded from."""
        codebook = np.asarray(jax.device_get(self.model.quantize.embedding[...]), np.float32)
        return hashlib.sha256(np.ascontiguousarray(codebook).tobytes()).hexdigest()[:16]

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The code grid (h, w) of an image of this size."""
        f = self.pixels_per_code
        if height % f or width % f:
            raise ValueError(f"image size {height}x{width} is not a multiple of the {f} pixels per code")
        return height // f, width // f

    def _chunks(self, array: np.ndarray, fn) -> np.ndarray:
        n, outs = array.shape[0], []
        for start in range(0, n, self.batch_size):
            chunk = array[start:start + self.batch_size]
            pad = self.batch_size - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
            chunk = jax.device_put(chunk, self._batch_sharding) if self.mesh is not None else chunk
            outs.append(np.asarray(fn(self._state, chunk))[: self.batch_size - pad])
        return np.concatenate(outs)

    def encode(self, images: Any) -> np.ndarray:
        """uint8 [B, H, W, 3] (or one [H, W, 3]) -> int32 codes [B, (H/f)*(W/f)]."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"encode expects uint8 pixels, got {images.dtype} (use tokenizer.image helpers)")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != self.config.in_channels:
            raise ValueError(
                f"encode expects [B, H, W, {self.config.in_channels}] images, got shape {images.shape}"
            )
        self.grid_for(*images.shape[1:3])
        if images.shape[0] == 0:
            return np.zeros((0, 0), np.int32)
        return self._chunks(images, self._encode)

    def decode(self, codes: Any, grid: tuple[int, int] | None = None) -> np.ndarray:
        """int codes [B, h*w] (or [B, h, w]) -> uint8 images [B, h*f, w*f, 3].

        ``grid`` is (h, w); without it a flat sequence must be a perfect square. Codes
        outside [0, num_image_codes) raise ValueError.
        """
        if not self.has_decoder:
            raise ValueError("this codec has no decoder (it was loaded from an encoder-only checkpoint)")
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"decode expects integer codes, got {codes.dtype}")
        bad = (codes < 0) | (codes >= self.num_image_codes)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{int(bad.sum())} codes outside [0, {self.num_image_codes}); first at index {idx}: "
                f"{int(codes[idx])} (image tokens must be shifted back by the text vocabulary size)"
            )
        if codes.ndim == 1:
            codes = codes[None]
        if codes.ndim == 2:
            n = codes.shape[1]
            if grid is None:
                side = math.isqrt(n)
                if side * side != n:
                    raise ValueError(f"{n} codes per image is not a square; pass grid=(h, w)")
                grid = (side, side)
            if grid[0] * grid[1] != n:
                raise ValueError(f"grid {tuple(grid)} needs {grid[0] * grid[1]} codes per image, got {n}")
            codes = codes.reshape(codes.shape[0], grid[0], grid[1])
        elif codes.ndim != 3:
            raise ValueError(f"decode expects codes [B, h*w] or [B, h, w], got shape {codes.shape}")
        if codes.shape[0] == 0:
            f = self.pixels_per_code
            return np.zeros((0, codes.shape[1] * f, codes.shape[2] * f, self.config.out_ch), np.uint8)
        return self._chunks(codes.astype(np.int32), self._decode)


def _retarget_dtype(model: VQGAN, dtype) -> None:
    """Sets the compute dtype of every submodule (after casting its parameters)."""
    for _, module in nnx.iter_graph(model):
        if isinstance(module, nnx.Module) and hasattr(module, "dtype"):
            module.dtype = dtype
