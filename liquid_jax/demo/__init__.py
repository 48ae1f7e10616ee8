"""``liquid-jax demo``: a mini-Liquid trained end to end on the synthetic shapes world."""
