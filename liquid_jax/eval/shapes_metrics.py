"""What a Liquid model of the shapes world gets right, read back by the world's checker.

* text-to-image: one image per held-out prompt, drawn with guidance and the ``sample``
  settings (the demo's: top-k 1, as the world is deterministic, so the most likely code is
  the right one), read back by the checker (``t2i_accuracy``);
* captioning: greedy captions of the renders of the held-out prompts (``caption_accuracy``);
* text perplexity on held-out documents (``text_perplexity``);
* both also on the prompts whose scene is not among the training pairs (``unseen_*``), on
  prompts with (colour, kind) pairs never seen in training (``novel_pair_*``) and per
  canvas (``by_canvas``);
* the checker on VQGAN round trips of the true images (``roundtrip_accuracy``), the
  ceiling of text-to-image accuracy, and their PSNR (``reconstruction_psnr``).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from PIL import Image

from liquid_jax.api import LiquidLM
from liquid_jax.codec import ImageCodec
from liquid_jax.eval import benchmarks, generate
from liquid_jax.sample.text import caption_images
from liquid_jax.shapes import checker
from liquid_jax.shapes.world import Scene, canvas_name, render
from liquid_jax.tokenizer.image import to_model_input
from liquid_jax.train.vqgan import losses as vqgan_losses

_LENGTH_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """What a model is measured on: prompts and their scenes (``seen``: the scene is also a
    training pair on the same canvas), prompts with (colour, kind) pairs never trained on,
    and text documents."""

    prompts: Sequence[str]
    scenes: Sequence[Scene]
    seen: Sequence[bool]
    novel_prompts: Sequence[str]
    novel_scenes: Sequence[Scene]
    texts: Sequence[str]


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
            lm, codec, benchmark, items, out, num_images=1, batch_size=len(items), seed=seed, guidance_scale=sample.guidance_scale,
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


def by_canvas(scenes: Sequence[Scene]) -> dict[tuple[int, int], list[int]]:
    """Indices of ``scenes`` grouped by canvas, canvases in sorted order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, scene in enumerate(scenes):
        groups.setdefault(scene.canvas, []).append(i)
    return dict(sorted(groups.items()))


def evaluate_prompts(lm: LiquidLM, codec: ImageCodec, prompts: Sequence[str], scenes: Sequence[Scene],
                     sample: Any, seed: int) -> dict[str, Any]:
    """Images drawn for ``prompts`` (on the canvases of their ``scenes``, one batch per
    canvas) and captions of their renders, with per-prompt hits."""
    n = len(prompts)
    renders = [render(s) for s in scenes]
    images: list[np.ndarray] = [np.empty(0)] * n
    captions: list[str] = [""] * n
    tokens, seconds = 0, 0.0
    for canvas, indices in by_canvas(scenes).items():
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
        "t2i_hits": np.array([checker.t2i_accuracy([s], [im]) for s, im in zip(scenes, images)]),
        "caption_hits": np.array([checker.caption_accuracy([s], [c]) for s, c in zip(scenes, captions)]),
        "tokens_per_s": tokens / seconds,
    }


def canvas_metrics(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``evaluate_prompts``' accuracies per canvas, keyed "WxH"."""
    return {
        canvas_name(canvas): {
            "width": canvas[1], "height": canvas[0], "prompts": len(indices),
            "t2i_accuracy": _mean(result["t2i_hits"][indices]),
            "caption_accuracy": _mean(result["caption_hits"][indices]),
        }
        for canvas, indices in by_canvas(result["scenes"]).items()
    }


def _mean(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def liquid_metrics(lm: LiquidLM, codec: ImageCodec, held_out: HeldOut, sample: Any,
                   seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every metric of a Liquid model on ``held_out`` and the samples behind them
    (``evaluate_prompts``' results on the prompts, "main", and the novel-pair ones, "novel")."""
    main = evaluate_prompts(lm, codec, held_out.prompts, held_out.scenes, sample, seed)
    novel = evaluate_prompts(lm, codec, held_out.novel_prompts, held_out.novel_scenes, sample, seed + 1)
    unseen = ~np.asarray(held_out.seen, bool)
    metrics = {
        "t2i_accuracy": _mean(main["t2i_hits"]),
        "caption_accuracy": _mean(main["caption_hits"]),
        "unseen_t2i_accuracy": _mean(main["t2i_hits"][unseen]),
        "unseen_caption_accuracy": _mean(main["caption_hits"][unseen]),
        "unseen_prompts": int(unseen.sum()),
        "novel_pair_t2i_accuracy": _mean(novel["t2i_hits"]),
        "novel_pair_caption_accuracy": _mean(novel["caption_hits"]),
        "text_ppl_liquid": text_perplexity(lm, held_out.texts),
        "sample_image_tokens_per_s": main["tokens_per_s"],
        "by_canvas": canvas_metrics(main),
    }
    return metrics, {"main": main, "novel": novel}


def reconstruct(codec: ImageCodec, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """uint8 images after encode -> decode, batched by size."""
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    sizes: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        sizes.setdefault(image.shape[:2], []).append(i)
    for size, indices in sizes.items():
        batch = np.stack([images[i] for i in indices])
        for i, image in zip(indices, codec.decode(codec.encode(batch), grid=codec.grid_for(*size))):
            out[i] = image
    return out


def reconstruction_psnr(codec: ImageCodec, images: Sequence[np.ndarray]) -> float:
    """Mean PSNR (dB) of encode -> decode over uint8 images."""
    to_model = lambda x: to_model_input(jnp.asarray(x))[None]  # noqa: E731
    return float(np.mean([vqgan_losses.psnr(to_model(a), to_model(b))[0]
                          for a, b in zip(images, reconstruct(codec, images))]))


def roundtrip_accuracy(codec: ImageCodec, scenes: Sequence[Scene]) -> float:
    """The checker's text-to-image accuracy on VQGAN round trips of the scenes' renders:
    the most text-to-image can reach with this codec."""
    return checker.t2i_accuracy(scenes, reconstruct(codec, [render(s) for s in scenes]))
