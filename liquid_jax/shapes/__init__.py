"""The shapes world: a procedural image + text domain small enough to learn on a laptop.

``world`` (scenes, worlds, the renderer and the scene sampler), ``captions`` (each
scene's canonical caption, its parser, question/answer pairs), ``corpus`` (the text-only
corpus) and ``checker`` (scenes read back from pixels, and the accuracies built on that).
It needs numpy, scipy and nothing else of liquid_jax.
"""
