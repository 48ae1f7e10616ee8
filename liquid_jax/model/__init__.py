"""liquid_jax.model."""
