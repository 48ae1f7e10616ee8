"""Chameleon's image tokenizer: 512 px, 32x32 = 1024 codes from a codebook of 8192 (dim 256).

Fine-tune or train from scratch on a folder of images (accelerators strongly advised):

  liquid-jax train-vqgan --config=configs/vqgan_chameleon.py --workdir=gs://bucket/vqgan \\
      --config.data.folder=/data/images \\
      --config.loss.perceptual_weights=/weights/vgg16_lpips.safetensors

The architecture matches Chameleon's ``vqgan.yaml``; ``liquid-jax convert vqgan`` turns the
released ``vqgan.ckpt`` into a checkpoint with this config.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(), z_channels=256,
        embed_dim=256, num_image_codes=8192, num_groups=32, beta=0.25, dtype="bfloat16", param_dtype="float32",
    ))
    c.data = ml_collections.ConfigDict(dict(
        source="folder", folder="", image_size=512, num_eval=64, seed=0,
    ))
    c.loss = ml_collections.ConfigDict(dict(
        l1_weight=1.0, l2_weight=1.0, codebook_weight=1.0,
        perceptual_weight=1.0, perceptual_weights="",
        disc_weight=0.75, disc_start=30_000, disc_lr=4.5e-6 * 64, disc_ndf=64, disc_layers=3,
    ))
    c.codebook = ml_collections.ConfigDict(dict(
        restart_every=1000, restart_until=0.5, dead_fraction=0.03, usage_decay=0.99,
        ema=False, ema_decay=0.99,
    ))
    c.batch_size = 64
    c.steps = 200_000
    c.lr = 4.5e-6 * 64  # taming's base rate times the batch size
    c.warmup_steps = 1000
    c.final_lr_fraction = 0.1
    c.adam_b1 = 0.5
    c.adam_b2 = 0.9
    c.grad_clip = 1.0
    c.seed = 0
    c.mesh_shape = (-1, 1, 1)
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000
    c.keep_checkpoints = 3
    return c
