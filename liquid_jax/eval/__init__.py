"""liquid_jax.eval: the shapes-world checker and its accuracies, evaluation reports."""
