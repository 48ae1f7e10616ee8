"""liquid_jax.eval."""
