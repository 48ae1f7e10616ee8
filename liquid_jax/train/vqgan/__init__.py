"""liquid_jax.train.vqgan: training a VQGAN image tokenizer (``liquid-jax train-vqgan``)."""
