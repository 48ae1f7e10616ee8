"""liquid_jax.convert."""
