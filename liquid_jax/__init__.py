"""liquid_jax: Liquid (arXiv 2412.04332) in JAX / Flax NNX.

``liquid_jax.load(path)`` returns a ``LiquidLM``; ``liquid_jax.load_vqgan(path)`` an
image codec. Both are imported on first use, so ``import liquid_jax`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "liquid_jax.api",
    "LiquidLM": "liquid_jax.api",
    "load_vqgan": "liquid_jax.codec",
}

__all__ = ["LiquidLM", "load", "load_vqgan", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'liquid_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
