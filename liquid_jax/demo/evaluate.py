"""Stage ``evaluate``: the Liquid model measured on the held-out data by
``liquid_jax.eval.shapes_metrics`` (text-to-image and caption accuracy, overall, unseen,
novel-pair and per canvas; text perplexity, also of the base LM; the VQGAN round-trip
ceiling). The drawn images and the captions are kept for the report."""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

import liquid_jax
from liquid_jax.demo import base_lm_stage, heldout, liquid_stage, vqgan_stage
from liquid_jax.demo.stages import Context
from liquid_jax.eval import shapes_metrics

STAGE = "evaluate"
SAMPLES_FILE = "samples.npz"
RESULTS_FILE = "results.json"


def save_samples(path: str, **images: Sequence[np.ndarray]) -> None:
    """Lists of images (any sizes) as one .npz, read back by ``load_samples``."""
    np.savez_compressed(path, **{f"{name}/{i:05d}": image for name, group in images.items()
                                 for i, image in enumerate(group)})


def load_samples(path: str) -> dict[str, list[np.ndarray]]:
    """``save_samples``' lists of images by name, in order."""
    out: dict[str, list[np.ndarray]] = {}
    with np.load(path) as data:
        for key in sorted(data.files):
            out.setdefault(key.split("/")[0], []).append(data[key])
    return out


def liquid_metrics(context: Context, model_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``shapes_metrics.liquid_metrics`` of the Liquid model in ``model_dir`` on the demo's
    held-out data, with the demo's VQGAN and sampling settings."""
    held_out = heldout.held_out(context)
    lm = liquid_jax.load(model_dir, progress=False)
    codec = vqgan_stage.load_codec(context)
    return shapes_metrics.liquid_metrics(lm, codec, held_out, context.config.sample, context.config.seed)


def run(context: Context) -> dict:
    metrics, samples = liquid_metrics(context, liquid_stage.model_path(context))
    base = liquid_jax.load(base_lm_stage.hf_path(context), extend_image_codes=0, progress=False)
    metrics["text_ppl_base"] = shapes_metrics.text_perplexity(base, heldout.load_eval(context)["text"])
    main, novel = samples["main"], samples["novel"]
    metrics["vqgan_roundtrip_accuracy"] = shapes_metrics.roundtrip_accuracy(vqgan_stage.load_codec(context),
                                                                            main["scenes"])
    save_samples(context.path(STAGE, SAMPLES_FILE), images=main["images"], renders=main["renders"],
                 novel_images=novel["images"], novel_renders=novel["renders"])
    with open(context.path(STAGE, RESULTS_FILE), "w") as f:
        json.dump({"captions": main["captions"], "novel_captions": novel["captions"]}, f, indent=1)
    return metrics
