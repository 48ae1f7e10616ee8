"""Speculative Jacobi decoding against token-by-token decoding, in the same run.

(a) The built-in default's Liquid model at its grid (4x4 codes), on its 64 held-out prompts:
    with its evaluation settings (guidance_scale 1.5, top-k 1: greedy) and with sampling
    (guidance_scale 1.5, temperature 1, top-k 64); forward passes per image, codes committed per
    forward (mean and histogram), image tokens/s at batch 1 and 4 for L in {4, 8, 16, 32}
    against the plain sampler, and the checker's text-to-image accuracy of both; each window
    with Jacobi drafts alone and with the training images' codes as a draft library
    (rows "L8" and "L8_library").
    ``--demo_workdir`` takes a finished ``liquid-jax demo`` run; without it one is trained
    in ``benchmarks/.cache/demo`` (about 15-40 minutes on 2 cores) and reused.
(b) The random benchmark model of benchmarks/sample_throughput.py (16x16 grid, guidance_scale 7,
    temperature 0.99, top-k 4096, top-p 0.96): random weights accept few drafts, so this
    shows the cost of a window rather than the gain.

Writes benchmarks/results/sample_speculative.json with a "summary" (best window per
setting) and every measurement, and the machine it ran on.

  python benchmarks/sample_speculative.py [--demo_workdir DIR] [--windows 4,8,16,32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from liquid_jax import host_memory  # noqa: E402

host_memory.reexec_with_hugepages()  # as `liquid-jax sample` does

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

import liquid_jax  # noqa: E402
from liquid_jax import machine  # noqa: E402
from liquid_jax.demo import heldout, liquid_stage, pretokenize_stage, vqgan_stage  # noqa: E402
from liquid_jax.demo.pipeline import run_demo  # noqa: E402
from liquid_jax.demo.stages import Context  # noqa: E402
from liquid_jax.sample.draft_library import read_draft_library  # noqa: E402
from liquid_jax.sample.images import generate_image_codes  # noqa: E402
from liquid_jax.sample.lm_sampling import sampling_params  # noqa: E402
from liquid_jax.shapes import checker  # noqa: E402

SETTINGS = {
    "eval": dict(guidance_scale=1.5, temperature=1.0, top_k=1, top_p=1.0),
    "sampled": dict(guidance_scale=1.5, temperature=1.0, top_k=64, top_p=1.0),
}
RANDOM = dict(guidance_scale=7.0, temperature=0.99, top_k=4096, top_p=0.96)
REPEATS = 21  # timed runs per measurement of the demo model (the median is reported)


def filters(settings: dict):
    return sampling_params(settings["temperature"], settings["top_k"], settings["top_p"])


def demo_model(workdir: str | None):
    """(LiquidLM, codec, held-out prompts, the training images' shards) of a finished demo
    run (trained here if needed)."""
    if workdir is None:
        workdir = os.path.join(ROOT, "benchmarks", ".cache", "demo")
        from liquid_jax.model.config import load_config_file

        run_demo(Context(load_config_file(os.path.join(ROOT, "configs", "demo.py")), workdir))
    context = Context(ml_collections.ConfigDict(), os.path.abspath(workdir))
    lm = liquid_jax.load(liquid_stage.model_path(context), progress=False)
    return (lm, vqgan_stage.load_codec(context), heldout.load_eval(context)["prompts"],
            pretokenize_stage.image_shards(context))


def timed_run(lm, prompts, settings, window, grid, repeats=1, library=None):
    """(the generation, median seconds of ``repeats`` runs), compiled beforehand. Batch-1
    runs take milliseconds, so one run measures mostly the noise of the machine."""
    kwargs = dict(guidance_scale=settings["guidance_scale"], num_images=1, seed=0, grid=grid,
                  size_prefix=lm.image.size_prefix, pixels_per_code=lm.image.pixels_per_code or 16,
                  speculative_window=window, sampling=filters(settings), draft_library=library)
    generate_image_codes(lm.model, lm.vocab, prompts, **kwargs)  # compiles this shape
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = generate_image_codes(lm.model, lm.vocab, prompts, **kwargs)
        seconds.append(time.perf_counter() - start)
    return result, float(np.median(seconds))


def measure(lm, prompts, settings, windows, grid, batches, codec=None, library=None):
    """Every window's step compression, acceptance histogram and speed against plain
    decoding, without and (given a ``library``) with the draft library."""
    codes_per_image = grid[0] * grid[1]
    rows = {}
    plain_full, _ = timed_run(lm, prompts, settings, 0, grid)
    runs = [("plain", 0, None)] + [(f"L{w}", w, None) for w in windows]
    if library is not None:
        runs += [(f"L{w}_library", w, library) for w in windows]
    for name, window, drafts in runs:
        full, _ = timed_run(lm, prompts, settings, window, grid, library=drafts)  # every prompt: forwards, accuracy
        row = {"forwards_per_image": float(full.forwards.mean()),
               "codes_per_forward": codes_per_image / float(full.forwards.mean()),
               "identical_to_plain": bool(np.array_equal(full.codes, plain_full.codes))}
        if codec is not None:
            images = codec.decode(full.codes, grid=grid)
            row["t2i_accuracy"] = checker.t2i_accuracy(heldout.scenes_of(list(prompts)), list(images))
        for batch in batches:
            _, seconds = timed_run(lm, prompts[:batch], settings, window, grid, repeats=REPEATS, library=drafts)
            row[f"image_tokens_per_s_batch{batch}"] = batch * codes_per_image / seconds
        rows[name] = row
    plain = rows["plain"]
    for name, row in rows.items():
        if name == "plain":
            continue
        row["step_compression"] = plain["forwards_per_image"] / row["forwards_per_image"]
        for batch in batches:
            key = f"image_tokens_per_s_batch{batch}"
            row[f"wall_ratio_batch{batch}"] = row[key] / plain[key]
    return rows


def histogram(lm, prompts, settings, window, grid, library=None) -> list[int]:
    from liquid_jax.sample.images import guided_batch
    from liquid_jax.sample.speculative import generate_speculative

    rows = guided_batch(lm.vocab, prompts, 1, grid, lm.image.pixels_per_code or 16,
                        size_prefix=lm.image.size_prefix)
    result = generate_speculative(
        lm.model, rows, grid[0] * grid[1], window=window, sampling=filters(settings),
        vocab_range=(lm.config.text_vocab_size, lm.config.vocab_size), guidance_scale=settings["guidance_scale"],
        library=library)
    return result.commits.tolist()


def best(rows, key, library=None):
    """The row (window) with the highest ``key``; ``library`` True / False: only rows
    with / without the draft library."""
    windows = [k for k in rows if k != "plain" and (library is None or k.endswith("_library") == library)]
    return max(windows, key=lambda k: rows[k][key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo_workdir", default=None)
    parser.add_argument("--windows", default="4,8,16,32")
    parser.add_argument("--skip_random", action="store_true", help="only the demo model")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "sample_speculative.json"))
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]

    result = {"machine": machine.describe(), "windows": windows}
    lm, codec, prompts, shards = demo_model(args.demo_workdir)
    grid = lm.image.default_grid
    library = read_draft_library(shards, grid, lm.config.num_image_codes)
    demo = {}
    for name, settings in SETTINGS.items():
        rows = measure(lm, prompts, settings, windows, grid, (1, 4), codec, library)
        demo[name] = {"settings": settings, "rows": rows}
        chosen = best(rows, "step_compression")
        window = int(chosen[1:].removesuffix("_library"))
        demo[name]["commit_histogram_best"] = histogram(
            lm, prompts, settings, window, grid, library if chosen.endswith("_library") else None)
        demo[name]["best"] = chosen
        print(name, json.dumps(demo[name]["rows"], indent=1))
    result["demo"] = {"grid": list(grid), "prompts": len(prompts), "library_images": len(library), **demo}

    if not args.skip_random:
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
        import sample_throughput

        _, model = sample_throughput.build_models()
        c = sample_throughput.CONFIG
        rows = sample_throughput.prompt_rows()
        result["random"] = random_model(model, rows, c, windows)

    result["summary"] = summarize(result)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["summary"], indent=2))


def summarize(result: dict) -> dict:
    """The best window per setting: step compression and wall-clock ratio against plain decoding."""
    rows_eval, rows_sampled = result["demo"]["eval"]["rows"], result["demo"]["sampled"]["rows"]
    fastest = best(rows_eval, "wall_ratio_batch1")
    summary = {
        "step_compression_eval": rows_eval[best(rows_eval, "step_compression")]["step_compression"],
        "step_compression_eval_window": best(rows_eval, "step_compression"),
        "step_compression_sampled": rows_sampled[best(rows_sampled, "step_compression")]["step_compression"],
        "step_compression_sampled_window": best(rows_sampled, "step_compression"),
        "wall_ratio_batch1": rows_eval[fastest]["wall_ratio_batch1"],
        "wall_ratio_batch1_window": fastest,
        "wall_ratio_batch1_sampled": rows_sampled[best(rows_sampled, "wall_ratio_batch1")]["wall_ratio_batch1"],
        "t2i_accuracy_plain": rows_eval["plain"]["t2i_accuracy"],
        "t2i_accuracy_speculative": rows_eval[fastest]["t2i_accuracy"],
    }
    for setting, rows in (("eval", rows_eval), ("sampled", rows_sampled)):  # Jacobi drafts alone
        alone = best(rows, "step_compression", library=False)
        summary[f"step_compression_{setting}_jacobi_alone"] = rows[alone]["step_compression"]
        summary[f"step_compression_{setting}_jacobi_alone_window"] = alone
        quick = best(rows, "wall_ratio_batch1", library=False)
        summary[f"wall_ratio_batch1_{setting}_jacobi_alone"] = rows[quick]["wall_ratio_batch1"]
    random = result.get("random")
    if random:
        for batch in (1, 4):
            plain = random[f"batch{batch}_plain"]
            runs = {k: v for k, v in random.items() if k.startswith(f"batch{batch}_L")}
            quick = max(runs, key=lambda k: runs[k]["image_tokens_per_s"])
            summary[f"random_wall_ratio_batch{batch}"] = runs[quick]["image_tokens_per_s"] / plain["image_tokens_per_s"]
            summary[f"random_wall_ratio_batch{batch}_window"] = quick.split("_")[1]
            few = min(runs, key=lambda k: runs[k]["forwards_per_image"])
            summary[f"random_step_compression_batch{batch}"] = plain["forwards_per_image"] / runs[few]["forwards_per_image"]
    return summary


def random_model(model, rows, c, windows) -> dict:
    """Forward passes and image tokens/s of the random benchmark model at batch 1 and 4."""
    from liquid_jax.sample.decode_loop import generate_tokens
    from liquid_jax.sample.filters import SamplingParams
    from liquid_jax.sample.speculative import generate_speculative

    sampling = SamplingParams(temperature=c["temperature"], top_k=c["top_k"], top_p=c["top_p"])
    steps = c["grid"][0] * c["grid"][1]
    vocab = (c["text_vocab"], c["text_vocab"] + c["image_codes"])
    out = {"settings": RANDOM, "grid": list(c["grid"])}
    images = c["images"]
    for batch in (1, images):
        pick = rows[:batch] + rows[images:images + batch]
        for window in [0, *windows]:
            def run():
                if window == 0:
                    generate_tokens(model, pick, steps, sampling=sampling, vocab_range=vocab,
                                    guidance_scale=c["guidance_scale"])
                    return np.full((batch,), steps)
                return generate_speculative(model, pick, steps, window=window, sampling=sampling, vocab_range=vocab,
                                            guidance_scale=c["guidance_scale"]).forwards
            run()
            start = time.perf_counter()
            forwards = run()
            seconds = time.perf_counter() - start
            out[f"batch{batch}_{'plain' if window == 0 else f'L{window}'}"] = {
                "forwards_per_image": float(np.mean(forwards)), "image_tokens_per_s": batch * steps / seconds}
    return out


if __name__ == "__main__":
    main()
