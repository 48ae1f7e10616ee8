"""liquid_jax.eval: the paper's evaluations and the built-in world's.

``benchmarks`` (prompt files and output layouts) and ``generate`` (sharded, resumable
image generation) behind ``eval generate``; ``fid`` (clean-fid, CLIP score); ``lm_eval_adapter``
(lm-evaluation-harness); ``vqa`` (LLaVA question and answer files); ``shapes_metrics`` (a
Liquid model on the shapes world, read back by ``liquid_jax.shapes.checker``) and ``report``
(evaluation reports).
"""
