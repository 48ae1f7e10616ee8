"""Encode / decode throughput of the Chameleon VQGAN: liquid_jax vs taming (PyTorch), one run.

Both sides use the full Chameleon config with the same random weights (taming's
initialisation, converted), the same batch of real images (skimage.data) and the same
thread budget. ``ours`` includes uint8 pre/post-processing on device; the reference gets
float tensors and returns floats (its pre/post-processing is not timed).

  python benchmarks/vqgan_codec.py [--sizes 256 512] [--batch 2] [--repeats 2] [--dtype float32]

Writes benchmarks/results/vqgan_codec.json: per size and direction ``ours``,
``reference``, ``ratio`` (ours / reference; higher is better), ``unit`` (images/s),
and the ``config``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import time

import jax
import numpy as np
import PIL.Image
import torch

from liquid_jax.codec import ImageCodec
from liquid_jax.convert.vqgan import load_state_dict
from liquid_jax.model.vqgan_config import VQGANConfig
from liquid_jax.tokenizer.image import resize_center_crop, to_model_input

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "vqgan_codec.json")


def _reference_modules(cfg: VQGANConfig):
    from taming.modules.diffusionmodules.model import Decoder, Encoder
    from taming.modules.vqvae.quantize import VectorQuantizer

    dd = dict(ch=cfg.ch, out_ch=cfg.out_ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
              attn_resolutions=cfg.attn_resolutions, in_channels=cfg.in_channels, resolution=cfg.resolution,
              z_channels=cfg.z_channels, double_z=False, dropout=0.0)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        mods = torch.nn.ModuleDict({
            "encoder": Encoder(**dd), "decoder": Decoder(**dd),
            "quantize": VectorQuantizer(cfg.num_image_codes, cfg.embed_dim, beta=0.25),
            "quant_conv": torch.nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1),
            "post_quant_conv": torch.nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1),
        })
    return mods.eval()


def _images(size: int, batch: int) -> np.ndarray:
    import skimage.data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left"]
    return np.stack([resize_center_crop(PIL.Image.fromarray(getattr(skimage.data, names[i % len(names)])()), size)
                     for i in range(batch)])


def _rate(fn, batch: int, repeats: int) -> float:
    fn()  # warm-up (and compilation for ours)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="compute dtype of ours (float32 or bfloat16)")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()

    cfg = VQGANConfig()
    ref = _reference_modules(cfg)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    codec = ImageCodec(load_state_dict(cfg, sd, "random taming weights"), batch_size=args.batch,
                       dtype=None if args.dtype == "float32" else args.dtype)

    results = {}
    for size in args.sizes:
        pixels = _images(size, args.batch)
        x = torch.from_numpy(to_model_input(pixels)).permute(0, 3, 1, 2).contiguous()
        codes = codec.encode(pixels)
        grid = codec.grid_for(size, size)
        with torch.no_grad():
            def ref_encode():
                return ref["quantize"](ref["quant_conv"](ref["encoder"](x)))[2][2]

            idx = ref_encode().reshape(-1)
            zq_shape = (args.batch, grid[0], grid[1], cfg.embed_dim)

            def ref_decode():
                zq = ref["quantize"].get_codebook_entry(idx, zq_shape)
                return ref["decoder"](ref["post_quant_conv"](zq))

            ours_enc = _rate(lambda: codec.encode(pixels), args.batch, args.repeats)
            ref_enc = _rate(ref_encode, args.batch, args.repeats)
            ours_dec = _rate(lambda: codec.decode(codes, grid=grid), args.batch, args.repeats)
            ref_dec = _rate(ref_decode, args.batch, args.repeats)
        agree = float((codes.reshape(-1) == idx.numpy()).mean())
        for name, ours, theirs in (("encode", ours_enc, ref_enc), ("decode", ours_dec, ref_dec)):
            results[f"{name}_{size}px"] = {"ours": ours, "reference": theirs, "ratio": ours / theirs}
            print(f"{name} {size}px: ours {ours:.3f} img/s, taming {theirs:.3f} img/s, ratio {ours / theirs:.2f}")
        results[f"encode_{size}px"]["code_agreement"] = agree

    out = {
        **results,
        "unit": "images/s",
        "config": {
            "vqgan": cfg.to_dict(), "batch": args.batch, "repeats": args.repeats, "dtype": args.dtype,
            "reference": "taming-transformers 0.0.1 Encoder/Decoder/VectorQuantizer, torch " + torch.__version__,
            "jax": jax.__version__, "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        },
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
