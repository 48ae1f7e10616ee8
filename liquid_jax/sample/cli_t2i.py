"""``liquid-jax sample t2i``: text-to-image with classifier-free guidance.

  liquid-jax sample t2i --checkpoint=liquid-7b/ --vqgan=vqgan/ --prompt="a red fox" --out=samples/
  liquid-jax sample t2i --checkpoint=run/ --vqgan=vqgan/ --prompts_file=prompts.txt --num_images=2 \\
      --grid=16x16 --guidance_scale=5 --out=samples/
  liquid-jax sample t2i --checkpoint=... --vqgan=... --prompt="a harbour at dusk" --size=384x640 --out=wide/

--checkpoint is a liquid_jax checkpoint, a training workdir or a Hugging Face directory.
The model is prompted as it was trained (its size prefix) at its trained grid unless
--grid says otherwise; a VQGAN that is not the model's is refused before any work.
Writes ``{prompt:03d}_{image}.png``, ``grid.png`` (every image, captioned), ``codes.npy``
[N, h*w] and ``sample.json`` (the settings) into a new --out folder, all at once: an
existing folder is refused unless --overwrite replaces an earlier ``sample t2i`` output.
"""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from liquid_jax import paths
from liquid_jax.checkpoint.directory import atomic_directory
from liquid_jax.errors import UserError
from liquid_jax.sample import cli_sample

cli_sample.define_flags(temperature=0.99, top_k=4096, top_p=0.96)
cli_sample.define_prompt_flags()
cli_sample.define_image_flags()
_NUM_IMAGES = flags.DEFINE_integer("num_images", 4, "Images per prompt.")
_OUT = flags.DEFINE_string("out", None, "Output directory (new, or an earlier output with --overwrite).",
                           required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an --out folder written by an earlier sample t2i.")
SETTINGS_FILE = "sample.json"


def check_output(out: str, overwrite: bool) -> None:
    """Refuses an --out that holds anything but an earlier output (with --overwrite)."""
    folder = paths.resolve(out)
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return
    if not overwrite:
        raise UserError(f"--out {out} already exists; give a new folder, or --overwrite to replace "
                        "an earlier sample t2i output")
    if not (folder / SETTINGS_FILE).exists():
        raise UserError(f"--out {out} was not written by sample t2i (no {SETTINGS_FILE}); "
                        "--overwrite replaces only such folders")


def main(argv: list[str]) -> None:
    del argv
    from PIL import Image

    from liquid_jax.eval.report import save_image_grid

    prompts = cli_sample.read_prompts()
    check_output(_OUT.value, _OVERWRITE.value)
    codec = cli_sample.load_codec(required=True)
    settings = cli_sample.image_settings(codec)
    lm = cli_sample.load_model()
    settings.update(num_images=_NUM_IMAGES.value)
    result = lm.generate_images(prompts, codec, **settings)
    with atomic_directory(_OUT.value, overwrite=True) as tmp:
        captions = []
        for row, image in enumerate(result.images):
            p, i = divmod(row, _NUM_IMAGES.value)
            with (tmp / f"{p:03d}_{i}.png").open("wb") as f:
                Image.fromarray(image).save(f, format="PNG")
            captions.append(prompts[p])
        with (tmp / "grid.png").open("wb") as f:
            save_image_grid(f, list(result.images), captions, columns=_NUM_IMAGES.value, scale=1)
        with (tmp / "codes.npy").open("wb") as f:
            np.save(f, result.codes)
        settings.update(grid=list(result.grid), checkpoint=flags.FLAGS.checkpoint, prompts=prompts,
                        size_prefix=lm.image.size_prefix)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    print(f"wrote {len(result.images)} images to {_OUT.value} ({result.forwards.mean():.0f} forward passes "
          f"per image for {result.codes.shape[1]} codes)")
