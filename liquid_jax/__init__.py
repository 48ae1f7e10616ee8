"""liquid_jax: Liquid (arXiv 2412.04332) in JAX / Flax NNX."""

__version__ = "0.1.0"
