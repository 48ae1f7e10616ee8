"""Images for a benchmark's prompts, in the layout its scorer reads: split over hosts,
batched over devices, resumable.

Prompts are cut into fixed batches of ``batch_size``; batch b belongs to process
b mod process_count (a disjoint, complete split) and is drawn with a seed made of
``seed`` and b, so a batch's images do not depend on which host draws it or on what
was finished before. A batch whose files all exist is skipped; otherwise it is drawn
again and only its missing files are written, each to a temporary name first and then
renamed, so an interrupted run (even ``kill -9``) never leaves a half-written image and
never rewrites a finished one. The settings are recorded in ``SETTINGS_FILE``; resuming
with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Sequence

import jax
import numpy as np
from tqdm import tqdm

from liquid_jax import former_names, paths
from liquid_jax.errors import UserError
from liquid_jax.eval.benchmarks import Benchmark, Prompt

SETTINGS_FILE = "eval_generate.json"
SUMMARY_FILE = "eval_generate_summary.json"
_PART = "eval_generate_summary.{}-of-{}.json"
_DEPTH = 2  # folders below --out in any benchmark's layout (geneval: <id>/samples/)


@dataclasses.dataclass(frozen=True)
class Split:
    """This process's share of the batches."""

    index: int = 0
    count: int = 1

    @classmethod
    def of_jax(cls) -> "Split":
        return cls(jax.process_index(), jax.process_count())

    def batches(self, total: int) -> list[int]:
        return list(range(self.index, total, self.count))


def batch_seed(seed: int, batch: int) -> int:
    """The sampler's seed for batch ``batch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0] & 0x7FFFFFFF)


def _record_settings(out, settings: dict[str, Any]) -> None:
    """Writes the run's settings, or checks them against an earlier run's (or process 0's)."""
    file = out / SETTINGS_FILE
    if file.exists():
        earlier = former_names.current(json.loads(file.read_text()), former_names.EVAL_GENERATE_SETTINGS)
        changed = sorted(k for k in set(earlier) | set(settings) if earlier.get(k) != settings.get(k))
        if changed:
            raise UserError(f"--out {out} holds a run with other settings ({', '.join(changed)}); "
                            "resume with the same flags or give a new --out")
        return
    if any(not f.name.startswith(".") for f in out.iterdir()):
        raise UserError(f"--out {out} is not empty and has no {SETTINGS_FILE}; give a new or empty folder")
    paths.write_atomic(file, json.dumps(settings, indent=1).encode())


def _remove_stale_temporaries(out) -> None:
    """Temporary files a killed run left behind (their final names were never written)."""
    for depth in range(_DEPTH + 1):
        for tmp in out.glob("*/" * depth + f".*{paths.TEMPORARY_MARK}*"):
            tmp.unlink()


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def generate(
    lm: Any,
    codec: Any,
    benchmark: Benchmark,
    prompts: Sequence[Prompt],
    out: str | os.PathLike,
    *,
    num_images: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    split: Split | None = None,
    progress: bool = True,
    **sampling: Any,
) -> dict[str, Any]:
    """Draws ``num_images`` images per prompt with ``lm.generate_images`` (``sampling``:
    its keyword arguments: guidance_scale, temperature, top_k, top_p, grid, speculative_window, ...)
    and writes ``benchmark``'s files under ``out``. ``settings``: what else identifies the
    run (checkpoint, VQGAN) in ``SETTINGS_FILE``. Returns this process's summary; with
    several processes, process 0 also writes ``SUMMARY_FILE`` for all of them."""
    num_images = benchmark.check_num_images(num_images)
    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    if not prompts:
        raise UserError("the prompt file holds no prompts")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise UserError(f"{benchmark.name}: {len(ids) - len(set(ids))} prompts share an id with another; "
                        "ids name the output files")
    split = split or Split.of_jax()
    out = paths.resolve(out)
    out.mkdir(parents=True, exist_ok=True)
    run = dict(settings or {}, benchmark=benchmark.name, prompts=len(prompts), num_images=num_images,
               batch_size=batch_size, seed=seed, **{k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in sampling.items()})
    if split.index == 0:
        _record_settings(out, run)
        _remove_stale_temporaries(out)
    _sync("liquid_jax_eval_generate_settings")
    if split.index != 0:
        _record_settings(out, run)

    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    mine = split.batches(len(batches))
    counts = dict(prompts=sum(len(batches[b]) for b in mine), skipped=0, drawn=0, images_written=0,
                  files_written=0)
    start = time.perf_counter()
    bar = tqdm(total=counts["prompts"], desc=benchmark.name, unit="prompt",
               disable=not progress or split.index != 0, dynamic_ncols=True)
    for b in mine:
        batch = batches[b]
        missing = [[f for f in benchmark.files(p, num_images) if not (out / f).exists()] for p in batch]
        if not any(missing):
            counts["skipped"] += len(batch)
            bar.update(len(batch))
            continue
        # A short last batch repeats its last prompt: one compiled shape for every batch.
        texts = [p.text for p in batch] + [batch[-1].text] * (batch_size - len(batch))
        result = lm.generate_images(texts, codec, num_images=num_images, seed=batch_seed(seed, b),
                                    progress=False, **sampling)
        for i, (prompt, todo) in enumerate(zip(batch, missing)):
            images = result.images[i * num_images : (i + 1) * num_images]
            for name, data in zip(benchmark.files(prompt, num_images), benchmark.contents(prompt, images)):
                if name in todo:
                    paths.write_atomic(out / name, data)
                    counts["files_written"] += 1
            counts["images_written"] += len(images) if todo else 0
        counts["drawn"] += len(batch)
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    drawn_images = counts["drawn"] * num_images
    summary = dict(counts, seconds=seconds, images_per_s=drawn_images / seconds if seconds else None,
                   process=split.index, processes=split.count)
    paths.write_atomic(out / _PART.format(split.index, split.count), json.dumps(summary, indent=1).encode())
    _sync("liquid_jax_eval_generate_done")
    if split.index == 0:
        parts = [json.loads((out / _PART.format(i, split.count)).read_text()) for i in range(split.count)]
        total = dict(run, processes=parts, images=sum(p["drawn"] for p in parts) * num_images,
                     seconds=max(p["seconds"] for p in parts))
        total["images_per_s"] = total["images"] / total["seconds"] if total["seconds"] else None
        paths.write_atomic(out / SUMMARY_FILE, json.dumps(total, indent=1).encode())
    return summary
