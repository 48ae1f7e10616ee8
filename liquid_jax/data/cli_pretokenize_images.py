"""``liquid-jax pretokenize images``: images + captions -> ArrayRecord VQGAN-code shards.

Examples::

  # a folder of images and a JourneyDB-style caption table
  liquid-jax pretokenize images --input imgs/ --captions imgs/meta.jsonl \\
      --image_field img_path --caption_field prompt --vqgan ckpt/vqgan --output data/jdb
  # WebDataset shards (key.jpg + key.txt or key.json)
  liquid-jax pretokenize images --input 'laion/*.tar' --vqgan ckpt/vqgan --output data/laion
  # several sizes and shapes: each image keeps its aspect ratio's grid
  liquid-jax pretokenize images --input imgs/ --captions imgs/meta.jsonl --vqgan ckpt/vqgan \\
      --resolutions 256,512 --aspect_buckets 1:1,2:3,3:2,9:16,16:9 --output data/multires
  # a TFDS data set with image and text features
  liquid-jax pretokenize images --format tfds --input my_dataset --tfds_data_dir ~/tfds \\
      --image_field image --caption_field caption --vqgan ckpt/vqgan --output data/tfds

Work is split over ``--num_workers`` / ``--worker_index`` or, by default, over the
processes of ``jax.distributed``.
"""

from __future__ import annotations

import json

import jax
from absl import flags, logging

from liquid_jax.api import load_vqgan
from liquid_jax.data import buckets, captioned_images, shards
from liquid_jax.data.pretokenize_images import pretokenize_images
from liquid_jax.errors import UserError
from liquid_jax.sharding import make_mesh
from liquid_jax.tokenizer.image import MAX_ASPECT_RATIO

_INPUT = flags.DEFINE_multi_string("input", None, "Image folder, .tar shards (globs), or a TFDS name.", required=True)
_FORMAT = flags.DEFINE_enum("format", "auto", ["auto", *captioned_images.FORMATS], "Input kind (auto: guessed).")
_CAPTIONS = flags.DEFINE_string("captions", None, "folder input: JSONL or CSV table of images and captions.")
_IMAGE_FIELD = flags.DEFINE_string("image_field", "image", "Field / feature holding the image (path for folders).")
_CAPTION_FIELD = flags.DEFINE_string("caption_field", "caption", "Field / feature holding the caption.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir.")
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "TFDS split.")
_VQGAN = flags.DEFINE_string("vqgan", None, "VQGAN checkpoint (see liquid_jax.load_vqgan).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.", required=True)
_PREFIX = flags.DEFINE_string("prefix", "images", "Shard file name prefix.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Square image size fed to the VQGAN (default: the "
                                   "resolution it was trained at, 512 for Chameleon's).")
_RESOLUTIONS = flags.DEFINE_list(
    "resolutions", None, "Several resolutions (sides of squares of the same pixel count, e.g. 256,512,768): "
    "each image goes to the nearest one (default: --resolution).")
_ASPECTS = flags.DEFINE_string(
    "aspect_buckets", "1:1", "Aspect ratios WIDTH:HEIGHT kept (e.g. 1:1,2:3,3:2,9:16,16:9): each image is "
    "resized to the nearest one at its resolution and keeps its grid (default: squares).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per VQGAN call.")
_PER_SHARD = flags.DEFINE_integer("images_per_shard", 10_000, "Images per output shard (folder, tfds).")
_MAX_ASPECT = flags.DEFINE_float("max_aspect_ratio", MAX_ASPECT_RATIO, "Drop images more elongated than this.")
_THREADS = flags.DEFINE_integer("decode_threads", 8, "Threads decoding and resizing images.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "Workers sharing the job (0: one per jax process).")
_WORKER_INDEX = flags.DEFINE_integer("worker_index", -1, "This worker's index in [0, num_workers).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace every shard of an --output folder made with other settings or inputs "
    "(without it such a folder is refused).")


def main(argv: list[str]) -> None:
    del argv
    fmt = _FORMAT.value if _FORMAT.value != "auto" else captioned_images.guess_format(_INPUT.value, _CAPTIONS.value)
    units = captioned_images.units_for(
        fmt,
        _INPUT.value,
        captions=_CAPTIONS.value,
        image_field=_IMAGE_FIELD.value,
        caption_field=_CAPTION_FIELD.value,
        per_shard=_PER_SHARD.value,
        tfds_data_dir=_TFDS_DATA_DIR.value,
        tfds_split=_TFDS_SPLIT.value,
    )
    local = jax.local_devices()
    mesh = make_mesh((-1, 1, 1), devices=local) if len(local) > 1 else None
    codec = load_vqgan(_VQGAN.value, batch_size=_BATCH.value, mesh=mesh)
    try:
        resolutions = [int(r) for r in _RESOLUTIONS.value or [_RESOLUTION.value or codec.config.resolution]]
    except ValueError:
        raise UserError(f"--resolutions must be integers, got {_RESOLUTIONS.value}") from None
    report = pretokenize_images(
        units,
        _OUTPUT.value,
        codec,
        prefix=_PREFIX.value,
        buckets=buckets.make_buckets(resolutions, buckets.parse_aspects(_ASPECTS.value), codec.pixels_per_code),
        batch_size=_BATCH.value,
        max_aspect_ratio=_MAX_ASPECT.value,
        decode_threads=_THREADS.value,
        worker=shards.worker_slot(_NUM_WORKERS.value, _WORKER_INDEX.value),
        overwrite=_OVERWRITE.value,
    )
    summary = {k: (len(v) if isinstance(v, list) else v) for k, v in report.items()}
    logging.info("done: %s", summary)
    print(json.dumps(summary))
