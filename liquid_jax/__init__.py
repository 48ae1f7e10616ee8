"""liquid_jax: Liquid (arXiv 2412.04332) in JAX / Flax NNX.

``liquid_jax.load(path)`` returns a ``LiquidLM``; ``liquid_jax.load_vqgan(path)`` an
image codec. Both are imported on first use, so ``import liquid_jax`` stays light.

Layers, lowest first; a module imports only from its own layer or lower ones, inside
functions too (``tests/test_layering.py``):

  0  errors, paths, host_memory, machine what every layer may raise, how paths are read, the CPU,
     former_names                        field names of earlier versions still read from disk
  1  sharding                            the mesh and logical axes
  2  model                               the decoder, the VQGAN, configs, attention, remat
  3  tokenizer                           text tokenizers, the multimodal vocabulary, pixels
  4  checkpoint                          every on-disk format of ours: cards, model, VQGAN and
                                         training-state checkpoints (it reads model configs,
                                         so it sits above model and tokenizer)
  5  convert, codec                      other formats <-> ours; images <-> codes
  6  data, shapes                        pre-tokenization, sequences, the input pipeline; the
                                         shapes world (scenes, captions, corpus, checker)
  7  train, sample                       training and its plan; generation
  8  api                                 ``load`` and ``load_vqgan``: a model from any checkpoint
  9  eval                                benchmarks, metrics, reports
  10 demo                                the built-in default
  11 cli                                 ``liquid_jax.cli`` and every ``cli_*`` module
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "liquid_jax.api",
    "LiquidLM": "liquid_jax.api",
    "load_vqgan": "liquid_jax.api",
}

__all__ = ["LiquidLM", "load", "load_vqgan", "__version__"]

LAYERS = (
    ("errors", "paths", "host_memory", "machine", "former_names"),
    ("sharding",),
    ("model",),
    ("tokenizer",),
    ("checkpoint",),
    ("convert", "codec"),
    ("data", "shapes"),
    ("train", "sample"),
    ("api",),
    ("eval",),
    ("demo",),
    ("cli",),
)
_LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def layer_of(module: str) -> int:
    """The layer of a ``liquid_jax.*`` module (``cli_*`` modules are command-line entry points)."""
    parts = module.split(".")
    if parts[-1] == "cli" or parts[-1].startswith("cli_"):
        return _LAYER["cli"]
    if len(parts) < 2 or parts[1] not in _LAYER:
        raise KeyError(f"{module} is in no layer of liquid_jax.LAYERS")
    return _LAYER[parts[1]]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'liquid_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
