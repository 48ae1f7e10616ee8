"""LPIPS-style perceptual distance on a VGG16 feature stack with user-supplied weights.

The weights file is a safetensors file with torchvision's VGG16 layout
(``features.{0,2,5,...,28}.weight/bias``, OIHW) and, optionally, LPIPS's linear heads
(``lin{0..4}.model.1.weight`` of shape [1, C, 1, 1]); without heads every channel
weighs 1. Nothing is downloaded: the user provides the file.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# torchvision vgg16 ``features`` indices of the conv layers, grouped by the LPIPS taps
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (a 2x2 max pool precedes each new group).
VGG16_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
# LPIPS input normalisation of [-1, 1] images.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def load_vgg16_weights(path: str) -> dict[str, np.ndarray]:
    """Reads and validates the VGG16 (+ optional LPIPS heads) tensors of a safetensors file."""
    from safetensors.numpy import load_file

    tensors = load_file(path)
    out = {}
    for stage in VGG16_STAGES:
        for i in stage:
            for part in ("weight", "bias"):
                key = f"features.{i}.{part}"
                if key not in tensors:
                    raise KeyError(f"{path}: missing tensor {key!r} (torchvision VGG16 layout expected)")
                value = tensors[key].astype(np.float32)
                out[key] = np.transpose(value, (2, 3, 1, 0)) if part == "weight" else value
    for k in range(len(VGG16_STAGES)):
        key = f"lin{k}.model.1.weight"
        if key in tensors:
            out[key] = tensors[key].astype(np.float32).reshape(-1)
    return out


def _features(weights: dict[str, jax.Array], x: jax.Array) -> list[jax.Array]:
    h = (x - _SHIFT) / _SCALE
    taps = []
    for s, stage in enumerate(VGG16_STAGES):
        if s:
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        for i in stage:
            h = jax.lax.conv_general_dilated(
                h, weights[f"features.{i}.weight"], (1, 1), ((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            ) + weights[f"features.{i}.bias"]
            h = jax.nn.relu(h)
        taps.append(h)
    return taps


def perceptual_distance(weights: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image LPIPS distance between images [B, H, W, 3] in [-1, 1]."""
    total = 0.0
    for k, (fx, fy) in enumerate(zip(_features(weights, x), _features(weights, y))):
        nx = fx / (jnp.sqrt(jnp.sum(fx * fx, axis=-1, keepdims=True)) + 1e-10)
        ny = fy / (jnp.sqrt(jnp.sum(fy * fy, axis=-1, keepdims=True)) + 1e-10)
        d = jnp.square(nx - ny)
        lin = weights.get(f"lin{k}.model.1.weight")
        d = d @ lin if lin is not None else d.sum(-1)
        total = total + d.mean(axis=(1, 2))
    return total
