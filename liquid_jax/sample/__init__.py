"""liquid_jax.sample."""
