"""Sampling: text-to-image with guidance, image understanding, captioning and text.

``decode_loop.generate_tokens`` is the one jitted prefill + ``lax.while_loop`` over a
static KV cache behind every task; ``filters`` chooses tokens (temperature, top-k,
top-p); ``prompts`` builds upstream's prompts (``prompt_images``: the codes of images in
them); ``images`` and ``text`` are the tasks;
``lm_sampling`` backs ``LiquidLM.generate_images`` / ``generate_text``.
"""
