"""liquid_jax.train."""
