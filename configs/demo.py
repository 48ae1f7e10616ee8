"""The built-in demo: a mini-Liquid on the synthetic shapes world, end to end.

  liquid-jax demo --workdir=/tmp/demo                                 # prints its expected time first
  liquid-jax demo --workdir=/tmp/smoke --config=configs/demo.py:smoke  # seconds
  liquid-jax demo --workdir=/tmp/demo --config.liquid.train.steps=3000  # any key can be overridden
  liquid-jax demo --workdir=/tmp/canvases --config=configs/demo.py:canvases  # two canvas shapes

Sections: ``world`` (data sizes), ``tokenizer``, ``vqgan`` (a ``train-vqgan`` config:
configs/vqgan_tiny.py adapted to the world), ``model`` (the base Gemma's sizes), ``base``
(the text pre-training run) and ``liquid`` (the mixed training run), both ``liquid-jax
train`` configs, ``liquid_mix`` (the weights of the Liquid run's data sources), ``sample``
(evaluation sampling) and ``experiments``.

In ``base`` and ``liquid`` the stages fill in what they make: ``model`` (this config keeps
the dtypes; the architecture is ``model``'s sizes, or the base LM's for Liquid),
``tokenizer``, ``data.sources``, ``data.num_image_codes`` and ``init``. Their ``train.seed``
and ``data.seed`` follow ``seed``, and ``checkpoint.every`` follows ``train.steps`` (one
checkpoint, at the end), unless they are set themselves.
"""

import os

import ml_collections

from liquid_jax.model.config import load_config_file
from liquid_jax.train.config import train_config


def _run(c: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
    """A trainer config for one of the demo's runs: float32, one read thread, the whole
    vocabulary in one loss chunk, a log line every step."""
    run = train_config(ml_collections.ConfigDict())
    run.model.dtype = "float32"
    # Rows of 128 tokens: the examples are 25-60 tokens, and on a 2-core CPU 16 rows of 128
    # train 1.3x the tokens per second of 8 rows of 256 (half the attention).
    run.data.update(seq_len=128, batch_size=32, packing_bins=32, read_threads=1)
    run.data.seed = c.get_ref("seed").identity()
    run.optimizer.update(learning_rate=3e-3, warmup_steps=20, end_lr_fraction=0.05)
    run.train.update(steps=steps, loss_chunk_size=0, log_every=1)
    run.train.seed = c.get_ref("seed").identity()
    run.checkpoint.update(keep=1, use_async=False)
    run.checkpoint.every = run.train.get_ref("steps").identity()
    return run


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.world = ml_collections.ConfigDict(dict(
        name="easy", train_scenes=16000, text_docs=6000, eval_prompts=64, eval_text_docs=256,
        # Training pairs over-sample the harder two-shape scenes (the world draws 25%); the
        # held-out prompts keep the world's own mix. At 2000 Liquid steps on 16000 scenes,
        # 50% / 70% two-shape training pairs: t2i_accuracy 0.844 / 0.938, captions 0.969 / 0.984.
        train_two_shape_fraction=0.7,
        # (height, width) in pixels, sides multiples of 32: every canvas is its own bucket of
        # codes, prompts state their size, and evaluation reports each (by_canvas).
        canvases=((64, 64),),
    ))
    c.tokenizer = ml_collections.ConfigDict(dict(vocab_size=512))

    c.vqgan = load_config_file(os.path.join(os.path.dirname(__file__), "vqgan_tiny.py"))
    # 64 px -> 4x4 codes (16 px per code, as Chameleon's VQGAN: four halvings). Shapes are
    # centred on multiples of 16 px, so each sits on a 2x2 block of codes wherever it is:
    # 64 codes per image (8 px per code) needed 4800 Liquid steps for t2i_accuracy 0.83.
    c.vqgan.model.update(ch_mult=(1, 1, 2, 2, 4), num_image_codes=512)
    c.vqgan.data.update(num_eval=64, image_size=64)
    c.vqgan.steps = 600
    c.vqgan.batch_size = 16
    # Early on the encoder's latents collapse onto a few codes (a blank canvas, 13.5 dB held
    # out); restarting dead codes on the latents the codebook fits worst is what ends it (no
    # restarts: 13.6 dB after 700 steps). At lr 1e-3 with a restart every 10 steps that is
    # ~100 steps in; at 2e-3 / 3e-3 ~350, and 700 steps of 3e-3 reached 25.9 dB where 600 of
    # 1e-3 reach 25.6 / 27.3 (seeds 0 / 1).
    c.vqgan.lr = 1e-3
    c.vqgan.codebook.restart_every = 10
    c.vqgan.eval_every = c.vqgan.checkpoint_every = 300

    # Multi-head attention (Gemma-7B's layout): at 3600 Liquid steps, t2i 0.766 -> 0.797 and
    # captions 0.891 -> 0.906 over one shared key/value head (Gemma-2B's multi-query).
    c.model = ml_collections.ConfigDict(dict(
        d_model=128, num_layers=4, num_heads=4, num_kv_heads=4, head_dim=32, mlp_dim=512,
    ))
    c.base = _run(c, steps=100)
    c.liquid = _run(c, steps=1600)
    # 2048 tokens a step: on a 2-core CPU twice the tokens per second of 4096, so twice the
    # steps. Image sequences state their size when there are several canvases (several grids;
    # data.size_prefix None); one canvas needs no prefix, which leaves 10 of a text-to-image
    # pair's ~45 tokens for more pairs.
    c.liquid.data.update(batch_size=16, t2i_ratio=0.8, cfg_drop=0.1)
    c.liquid.optimizer.warmup_steps = 30
    # The Liquid run's data.sources: text documents and image pairs with these weights (0
    # leaves a source out). Four in five image pairs are text-to-image (liquid.data.t2i_ratio)
    # and text weighs half what it did (1 : 5 -> 0.5 : 5): t2i_accuracy 0.797 -> 0.844 at
    # 2000 steps, captions 0.953 -> 0.969, text ratio 0.946.
    c.liquid_mix = ml_collections.ConfigDict(dict(text_weight=0.5, image_weight=5.0))
    # Top-k 1: each prompt of this world has exactly one right image. Mild guidance: with 25%
    # two-shape training pairs and 3600 steps t2i_accuracy is 0.797 / 0.797 / 0.0 at
    # guidance_scale 1 / 1.5 / 3 (strong guidance pushes this small model off its images).
    c.sample = ml_collections.ConfigDict(dict(
        guidance_scale=1.5, temperature=1.0, top_k=1, top_p=1.0, caption_max_tokens=40,
    ))
    # --experiment scaling: model sizes (d_model, num_layers) and the three data mixes;
    # --experiment mutual_boost: how much extra t2i / caption data is added.
    c.experiments = ml_collections.ConfigDict(dict(
        sizes=((32, 2), (64, 2), (128, 4)),
        extra_weight=2.0,
    ))

    # Each stage's wall seconds x the float32 matmul peak (GFLOP/s) of the machine they were
    # measured on (liquid_jax.demo.timing), per step for the training stages: the demo divides
    # by this machine's peak to say how long it expects to take. Measured in a fresh-clone run
    # on a 2-core machine of 198 GFLOP/s, the budget's reference machine (a 409 GFLOP/s one
    # gave 10-20% more for the training stages: its small steps use less of its peak).
    c.stage_cost_gflop = ml_collections.ConfigDict(dict(
        world=1_760, heldout=20, tokenizer=50, pretokenize=7_700, evaluate=3_230, report=140,
    ))
    c.step_cost_gflop = ml_collections.ConfigDict(dict(vqgan=75, base_lm=106, liquid=42.5))

    if preset == "smoke":
        # Two canvases, so that the tests run the multi-canvas path (buckets, by_canvas).
        c.world.update(train_scenes=160, text_docs=200, eval_prompts=8, eval_text_docs=16,
                       canvases=((64, 64), (96, 64)))
        c.tokenizer.vocab_size = 320
        c.vqgan.data.num_eval = 16
        c.vqgan.steps = 6
        c.vqgan.batch_size = 8
        c.vqgan.log_every = c.vqgan.eval_every = c.vqgan.checkpoint_every = 6
        c.vqgan.model.update(ch=8, ch_mult=(1, 1, 2, 4), z_channels=8, embed_dim=8, num_image_codes=32, num_groups=4)
        c.model.update(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64)
        # Batch 8: divisible by the 8 fake CPU devices the tests run on.
        for run, seq_len in ((c.base, 128), (c.liquid, 192)):
            run.train.steps = 8
            run.optimizer.warmup_steps = 2
            run.data.update(batch_size=8, seq_len=seq_len, packing_bins=8)
        c.sample.caption_max_tokens = 8
        c.experiments.sizes = ((32, 1), (48, 1))
        c.stage_cost_gflop.update(world=17, heldout=1, tokenizer=1, pretokenize=400, evaluate=4_600, report=100)
        c.step_cost_gflop.update(vqgan=1_200, base_lm=115, liquid=78)
    elif preset == "canvases":
        # Squares and 96x64 landscapes, each prompt with its size prefix. At the default's 600
        # + 1600 steps: t2i 0.61 / 0.73 by canvas, round trips 0.77. At 900 + 3200 (about 20
        # min at 198 GFLOP/s, 5 min over the default's budget): t2i 0.90 / 0.85, captions 1.0
        # / 1.0, round trips 1.0 (30.0 dB).
        c.world.canvases = ((64, 64), (64, 96))
        c.vqgan.steps = 900
        c.liquid.train.steps = 3200
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for demo.py; expected 'smoke', 'canvases' or none")
    return c
