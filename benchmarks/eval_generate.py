"""``liquid-jax eval generate`` against a loop that calls ``lm.generate_images`` prompt by
prompt, in the same run.

The model is benchmarks/sample_throughput.py's random decoder (Llama layout, d_model 512,
8 layers, 32000 text tokens + 8192 codes) with its sampling settings (16x16 grid, guidance_scale 7,
temperature 0.99, top-k 4096, top-p 0.96), a random VQGAN with 8192 codes to decode, and
prompts of a few words. Ours draws ``--batch_size`` prompts per call (the default of the
command) and writes the PNGs; the loop draws one prompt per call and keeps the images in
memory. Both are warmed up first, so compilation is not counted.

  python benchmarks/eval_generate.py [--prompts 16] [--batch_size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from liquid_jax import host_memory  # noqa: E402

host_memory.reexec_with_hugepages()  # as `liquid-jax eval generate` does

import sample_throughput  # noqa: E402
from helpers.sample_models import tiny_vocab, tiny_vqgan  # noqa: E402
from liquid_jax import machine  # noqa: E402
from liquid_jax.api import LiquidLM  # noqa: E402
from liquid_jax.codec import ImageCodec  # noqa: E402
from liquid_jax.eval import benchmarks, generate  # noqa: E402
from liquid_jax.tokenizer.vocab import MultimodalVocab  # noqa: E402

WORDS = "a red fox runs over green hills under the evening sky near an old blue house".split()


def build(directory: str):
    c = sample_throughput.CONFIG
    _, model = sample_throughput.build_models()
    text = tiny_vocab(directory).text
    vocab = MultimodalVocab(text, sample_throughput.SPECIAL, c["text_vocab"], c["image_codes"])
    lm = LiquidLM(model.config, model, vocab)
    return lm, ImageCodec(tiny_vqgan(num_image_codes=c["image_codes"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "eval_generate.json"))
    args = parser.parse_args()
    c = sample_throughput.CONFIG
    sampling = dict(guidance_scale=c["guidance_scale"], temperature=c["temperature"], top_k=c["top_k"],
                    top_p=c["top_p"], grid=c["grid"])
    with tempfile.TemporaryDirectory() as tmp:
        lm, codec = build(tmp)
        prompts = [benchmarks.Prompt(f"{i:05d}", " ".join(WORDS[i % 7 : i % 7 + 5])) for i in range(args.prompts)]
        bench = benchmarks.get("prompts")

        generate.generate(lm, codec, bench, prompts[: args.batch_size], os.path.join(tmp, "warm"),
                          batch_size=args.batch_size, progress=False, **sampling)
        start = time.perf_counter()
        generate.generate(lm, codec, bench, prompts, os.path.join(tmp, "ours"), batch_size=args.batch_size,
                          **sampling)
        ours = time.perf_counter() - start

        lm.generate_images([prompts[0].text], codec, num_images=1, progress=False, **sampling)
        start = time.perf_counter()
        for i, prompt in enumerate(prompts):
            lm.generate_images([prompt.text], codec, num_images=1, seed=i, progress=False, **sampling)
        loop = time.perf_counter() - start

    result = {
        "ours_images_per_s": args.prompts / ours,
        "loop_images_per_s": args.prompts / loop,
        "ratio": loop / ours,
        "ours_seconds": ours,
        "loop_seconds": loop,
        "prompts": args.prompts,
        "batch_size": args.batch_size,
        "config": c,
        "machine": machine.describe(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("ours_images_per_s", "loop_images_per_s", "ratio")}))


if __name__ == "__main__":
    main()
