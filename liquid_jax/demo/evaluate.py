"""Stage ``evaluate``: what the demo measures.

* text-to-image: one image per held-out prompt, drawn with guidance and the ``sample``
  settings (by default top-k 1: the world is deterministic, so the most likely code is the
  right one), read back by the shapes checker (``t2i_accuracy``);
* captioning: greedy captions of the renders of the held-out prompts (``caption_accuracy``);
* text perplexity on held-out documents, of the base LM and of the Liquid model;
* both also on the prompts whose scene is not among the training pairs (``unseen_*``) and
  on prompts with (colour, kind) pairs never seen in training (``novel_pair_*``);
* the checker on VQGAN round trips of the true images (``vqgan_roundtrip_accuracy``),
  the ceiling of text-to-image accuracy.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Sequence

import numpy as np
from PIL import Image

import liquid_jax
from liquid_jax.api import LiquidLM
from liquid_jax.codec import ImageCodec
from liquid_jax.data import shapes
from liquid_jax.demo import base_lm_stage, liquid_stage, vqgan_stage
from liquid_jax.demo import heldout
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context
from liquid_jax.eval import benchmarks, generate
from liquid_jax.eval import shapes as shapes_eval
from liquid_jax.sample.text import caption_images

STAGE = "evaluate"
SAMPLES_FILE = "samples.npz"
RESULTS_FILE = "results.json"
_LENGTH_BUCKET = 32


def text_perplexity(lm: LiquidLM, texts: Sequence[str], batch_size: int = 32) -> float:
    """exp(mean negative log-likelihood) of ``<bos> text <eos>`` over every token after
    ``<bos>``, under the model's whole (text + image) vocabulary."""
    special = lm.config.special_tokens
    docs = [[special.bos] + lm.vocab.encode_text(t) + [special.eos] for t in texts]
    width = -(-max(len(d) for d in docs) // _LENGTH_BUCKET) * _LENGTH_BUCKET
    total, count = 0.0, 0
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        tokens = np.full((batch_size, width), special.pad, np.int32)
        mask = np.zeros((batch_size, width - 1), bool)
        for row, doc in enumerate(chunk):
            tokens[row, : len(doc)] = doc
            mask[row, : len(doc) - 1] = True
        logits = np.asarray(lm.logits(tokens), np.float64)[:, :-1]
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        target = np.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
        total -= float(target[mask].sum())
        count += int(mask.sum())
    return float(np.exp(total / count))


def draw(lm: LiquidLM, codec: ImageCodec, prompts: Sequence[str], sample: Any, grid: tuple[int, int],
         seed: int) -> tuple[np.ndarray, float]:
    """(uint8 images, one per prompt; sampled image tokens per second), drawn the way
    ``liquid-jax eval generate`` draws a benchmark and read back from its PNG files."""
    benchmark = benchmarks.get("prompts")
    items = [benchmarks.Prompt(f"{i:05d}", p) for i, p in enumerate(prompts)]
    with tempfile.TemporaryDirectory() as out:
        summary = generate.generate(
            lm, codec, benchmark, items, out, num_images=1, batch_size=len(items), seed=seed,
            guidance_scale=sample.guidance_scale,
            temperature=sample.temperature, top_k=sample.top_k, top_p=sample.top_p, grid=grid,
        )
        images = np.stack([np.asarray(Image.open(os.path.join(out, name)).convert("RGB"))
                           for item in items for name in benchmark.files(item, 1)])
    return images, len(items) * grid[0] * grid[1] / summary["seconds"]


def describe_images(lm: LiquidLM, codec: ImageCodec, images: np.ndarray, max_new_tokens: int) -> list[str]:
    """Greedy captions with upstream's captioning prompt of same-size images [n, h, w, 3]."""
    return caption_images(lm.model, lm.vocab, list(images), max_new_tokens, codec=codec,
                          image_size=images.shape[1:3], size_prefix=lm.image.size_prefix,
                          progress="captioning").texts


def evaluate_prompts(lm: LiquidLM, codec: ImageCodec, prompts: Sequence[str], scenes: Sequence[shapes.Scene],
                     sample: Any, seed: int) -> dict[str, Any]:
    """Images drawn for ``prompts`` (on the canvases of their ``scenes``, one batch per
    canvas) and captions of their renders, with per-prompt hits."""
    n = len(prompts)
    renders = [shapes.render(s) for s in scenes]
    images: list[np.ndarray] = [np.empty(0)] * n
    captions: list[str] = [""] * n
    tokens, seconds = 0, 0.0
    for canvas, indices in heldout.by_canvas(scenes).items():
        grid = codec.grid_for(*canvas)
        drawn, tokens_per_s = draw(lm, codec, [prompts[i] for i in indices], sample, grid, seed)
        described = describe_images(lm, codec, np.stack([renders[i] for i in indices]), sample.caption_max_tokens)
        for i, image, text in zip(indices, drawn, described):
            images[i], captions[i] = image, text
        tokens += len(indices) * grid[0] * grid[1]
        seconds += len(indices) * grid[0] * grid[1] / tokens_per_s
    return {
        "scenes": list(scenes),
        "images": images,
        "renders": renders,
        "captions": captions,
        "t2i_hits": np.array([shapes_eval.t2i_accuracy([s], [im]) for s, im in zip(scenes, images)]),
        "caption_hits": np.array([shapes_eval.caption_accuracy([s], [c]) for s, c in zip(scenes, captions)]),
        "tokens_per_s": tokens / seconds,
    }


def canvas_metrics(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``evaluate_prompts``' accuracies per canvas, keyed "WxH"."""
    return {
        world_stage.canvas_name(canvas): {
            "width": canvas[1], "height": canvas[0], "prompts": len(indices),
            "t2i_accuracy": _mean(result["t2i_hits"][indices]),
            "caption_accuracy": _mean(result["caption_hits"][indices]),
        }
        for canvas, indices in heldout.by_canvas(result["scenes"]).items()
    }


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


def _mean(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def liquid_metrics(context: Context, model_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every metric of a Liquid model on the held-out data, and the samples behind them."""
    evaluation = heldout.load_eval(context)
    lm = liquid_jax.load(model_dir, progress=False)
    codec = vqgan_stage.load_codec(context)
    seed = context.config.seed
    main = evaluate_prompts(lm, codec, evaluation["prompts"], heldout.prompt_scenes(evaluation),
                            context.config.sample, seed)
    novel = evaluate_prompts(lm, codec, evaluation["novel_pair_prompts"],
                             heldout.prompt_scenes(evaluation, "novel_pair_prompts"), context.config.sample, seed + 1)
    unseen = ~np.asarray(evaluation["seen"], bool)
    metrics = {
        "t2i_accuracy": _mean(main["t2i_hits"]),
        "caption_accuracy": _mean(main["caption_hits"]),
        "unseen_t2i_accuracy": _mean(main["t2i_hits"][unseen]),
        "unseen_caption_accuracy": _mean(main["caption_hits"][unseen]),
        "unseen_prompts": int(unseen.sum()),
        "novel_pair_t2i_accuracy": _mean(novel["t2i_hits"]),
        "novel_pair_caption_accuracy": _mean(novel["caption_hits"]),
        "text_ppl_liquid": text_perplexity(lm, evaluation["text"]),
        "sample_image_tokens_per_s": main["tokens_per_s"],
        "by_canvas": canvas_metrics(main),
    }
    return metrics, {"main": main, "novel": novel}


def run(context: Context) -> dict:
    metrics, samples = liquid_metrics(context, liquid_stage.model_path(context))
    base = liquid_jax.load(base_lm_stage.hf_path(context), extend_image_codes=0, progress=False)
    metrics["text_ppl_base"] = text_perplexity(base, heldout.load_eval(context)["text"])
    main, novel = samples["main"], samples["novel"]
    # The checker on VQGAN round trips of the true images: the most text-to-image can reach.
    reconstructed = vqgan_stage.reconstruct(vqgan_stage.load_codec(context), main["renders"])
    metrics["vqgan_roundtrip_accuracy"] = shapes_eval.t2i_accuracy(main["scenes"], reconstructed)
    save_samples(context.path(STAGE, SAMPLES_FILE), images=main["images"], renders=main["renders"],
                 novel_images=novel["images"], novel_renders=novel["renders"])
    with open(context.path(STAGE, RESULTS_FILE), "w") as f:
        json.dump({"captions": main["captions"], "novel_captions": novel["captions"]}, f, indent=1)
    return metrics
