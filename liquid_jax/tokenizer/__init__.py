"""liquid_jax.tokenizer."""
