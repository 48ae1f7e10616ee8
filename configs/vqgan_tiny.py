"""A tiny VQGAN for the shapes world's 64x64 renders (``liquid_jax.shapes``): trains on 2 CPU
cores in minutes.

  liquid-jax train-vqgan --config=configs/vqgan_tiny.py --workdir=/tmp/vqgan_tiny

16x16 = 256 codes per 64 px image (downsample 4), a codebook of 256 codes of dim 16.
``get_config("smoke")`` is a seconds-long run for tests.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=32,
        embed_dim=16, num_image_codes=256, num_groups=8, beta=0.25, dtype="float32", param_dtype="float32",
    ))
    c.data = ml_collections.ConfigDict(dict(
        source="shapes", folder="", image_size=64, num_train=512, num_eval=64, seed=0,
    ))
    c.loss = ml_collections.ConfigDict(dict(
        l1_weight=1.0, l2_weight=1.0, codebook_weight=1.0,
        perceptual_weight=0.0, perceptual_weights="",
        disc_weight=0.0, disc_start=2000, disc_lr=1e-4, disc_ndf=32, disc_layers=2,
    ))
    c.codebook = ml_collections.ConfigDict(dict(
        restart_every=25, restart_until=0.8, dead_fraction=0.03, usage_decay=0.95,
        ema=True, ema_decay=0.99,
    ))
    c.batch_size = 16
    c.steps = 1000
    c.lr = 1e-3
    c.warmup_steps = 50
    c.final_lr_fraction = 0.1
    c.adam_b1 = 0.9
    c.adam_b2 = 0.99
    c.grad_clip = 10.0
    c.seed = 0
    c.mesh_shape = (-1, 1, 1)
    c.log_every = 50
    c.eval_every = 250
    c.checkpoint_every = 250
    c.keep_checkpoints = 2
    if arg == "smoke":
        c.model.update(ch=16, ch_mult=(1, 2), z_channels=8, embed_dim=8, num_image_codes=32)
        c.data.update(image_size=16, num_train=16, num_eval=8)
        c.loss.update(disc_weight=0.1, disc_start=2, disc_ndf=16, disc_layers=1)
        c.codebook.update(restart_every=2, ema=False)  # the gradient codebook path
        c.batch_size = 8
        c.steps = 4
        c.warmup_steps = 1
        c.log_every = c.eval_every = c.checkpoint_every = 2
    return c
