"""``liquid-jax eval fid``: FID of generated images as clean-fid computes it ("clean" mode).

  liquid-jax eval fid --generated=mjhq_images/ --reference=MJHQ-30K/mjhq30k_imgs/ --per_category --out=fid.json
  liquid-jax eval fid --generated=samples/ --reference=reference_stats.npz --inception=inception-2015-12-05.pt
  liquid-jax eval fid --generated=mjhq_images/ --reference=MJHQ-30K/mjhq30k_imgs/ \\
      --clip_model=clip-vit-large-patch14/ --prompts=MJHQ-30K/meta_data.json

Images are found recursively (.png, .jpg, ...). The numbers equal clean-fid's
``compute_fid(reference, generated, mode="clean")``, what upstream Liquid reports on MJHQ-30K.
--reference is a folder of images or a .npz of clean-fid statistics (mu, sigma).
--per_category expects MJHQ-30K's layout, DIR/<category>/<id>.png, on both sides and adds
one FID per category. The Inception weights (inception-2015-12-05.pt) are read from
clean-fid's cache (/tmp) or --inception, never downloaded. --clip_model with --prompts
(JSON: image name without extension -> prompt, e.g. MJHQ-30K's meta_data.json) adds
torchmetrics' CLIP score. Needs the eval extra and clean-fid (see README).
"""

from __future__ import annotations

import os

from absl import app, flags

from liquid_jax import paths
from liquid_jax.eval import fid

_GENERATED = flags.DEFINE_string("generated", None, "Folder of generated images.", required=True)
_REFERENCE = flags.DEFINE_string(
    "reference", None, "Folder of reference images, or a .npz of their statistics (mu, sigma).", required=True)
_PER_CATEGORY = flags.DEFINE_bool(
    "per_category", False, "Also one FID per category folder (DIR/<category>/<image> on both sides).")
_INCEPTION = flags.DEFINE_string(
    "inception", None, f"{fid.INCEPTION_FILE}, or its folder (default: clean-fid's cache).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per Inception (and CLIP) batch.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "Processes reading and resizing images (default: CPU cores, at most 12).")
_OUT = flags.DEFINE_string("out", None, "Write the summary here as JSON.")
_CLIP_MODEL = flags.DEFINE_string("clip_model", None, "Hugging Face CLIP model directory: adds the CLIP score.")
_PROMPTS = flags.DEFINE_string(
    "prompts", None, "JSON mapping each image name (without extension) to its prompt, for --clip_model.")


def main(argv: list[str]) -> None:
    del argv
    if _BATCH_SIZE.value < 1:
        raise app.UsageError(f"--batch_size must be >= 1, got {_BATCH_SIZE.value}")
    if _NUM_WORKERS.value is not None and _NUM_WORKERS.value < 0:
        raise app.UsageError(f"--num_workers must be >= 0, got {_NUM_WORKERS.value}")
    if (_CLIP_MODEL.value is None) != (_PROMPTS.value is None):
        raise app.UsageError("--clip_model and --prompts go together")
    num_workers = min(12, os.cpu_count() or 1) if _NUM_WORKERS.value is None else _NUM_WORKERS.value
    prompts = None
    if _PROMPTS.value is not None:  # a bad prompts file fails before any image is read
        files = fid.list_images(_GENERATED.value, "--generated")
        prompts = fid.read_prompts(_PROMPTS.value, files)
    summary = fid.compute_fid(_GENERATED.value, _REFERENCE.value, per_category=_PER_CATEGORY.value,
                              inception=_INCEPTION.value, batch_size=_BATCH_SIZE.value,
                              num_workers=num_workers, progress=True)
    if prompts is not None:
        summary.clip_score = fid.clip_score(files, prompts, _CLIP_MODEL.value, batch_size=_BATCH_SIZE.value,
                                            progress=True)
        summary.clip_model = _CLIP_MODEL.value
    reference = "statistics" if summary.n_reference is None else f"{summary.n_reference} reference images"
    print(f"FID {summary.fid:.4f} (clean-fid, clean mode; {summary.n_generated} generated images vs {reference})")
    for name, row in (summary.per_category or {}).items():
        print(f"  {name:<24} {row['fid']:9.4f}  ({row['n_generated']} vs {row['n_reference']})")
    if summary.clip_score is not None:
        print(f"CLIP score {summary.clip_score:.4f} (torchmetrics, {summary.clip_model})")
    if _OUT.value:
        paths.write_atomic(_OUT.value, summary.to_json())
        print(f"wrote {_OUT.value}")
