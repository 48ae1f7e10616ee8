"""liquid_jax.data."""
