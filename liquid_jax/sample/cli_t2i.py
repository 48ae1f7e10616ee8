"""``liquid-jax sample t2i``: text-to-image with classifier-free guidance.

  liquid-jax sample t2i --checkpoint=ckpt/liquid-7b --vqgan=vqgan/ --prompt="a red fox" --out=out/
  liquid-jax sample t2i --checkpoint=... --vqgan=... --prompts_file=prompts.txt --num_images=2 \\
      --grid=16x16 --cfg=5 --out=out/

Writes ``{prompt:03d}_{image}.png``, ``grid.png`` (every image, captioned) and
``codes.npy`` [N, h*w] to --out.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from liquid_jax.sample import cli_sample

cli_sample.define_flags(temperature=0.99, top_k=4096, top_p=0.96)
cli_sample.define_prompt_flags()
_CFG = flags.DEFINE_float("cfg", 7.0, "Classifier-free guidance scale (0: no guidance).")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 4, "Images per prompt.")
_GRID = flags.DEFINE_string("grid", "32x32", "Code grid HxW (32x32 = 512 px with Chameleon's VQGAN).")
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)


def parse_grid(text: str) -> tuple[int, int]:
    """"HxW" -> (h, w)."""
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--grid must look like 32x32, got {text!r}") from None
    return h, w


def main(argv: list[str]) -> None:
    cli_sample.reject_arguments(argv)
    from liquid_jax.eval.report import save_image_grid
    from PIL import Image

    prompts = cli_sample.read_prompts()
    grid = parse_grid(_GRID.value)
    codec = cli_sample.load_codec(required=True)
    lm = cli_sample.load_model()
    result = lm.generate_images(
        prompts, codec, cfg=_CFG.value or None, num_images=_NUM_IMAGES.value, grid=grid,
        **cli_sample.sampling_flags(),
    )
    os.makedirs(_OUT.value, exist_ok=True)
    captions = []
    for row, image in enumerate(result.images):
        p, i = divmod(row, _NUM_IMAGES.value)
        Image.fromarray(image).save(os.path.join(_OUT.value, f"{p:03d}_{i}.png"))
        captions.append(prompts[p])
    save_image_grid(os.path.join(_OUT.value, "grid.png"), list(result.images), captions,
                    columns=_NUM_IMAGES.value, scale=1)
    np.save(os.path.join(_OUT.value, "codes.npy"), result.codes)
    print(f"wrote {len(result.images)} images to {_OUT.value}")
