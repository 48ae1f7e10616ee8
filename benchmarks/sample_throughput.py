"""Guided text-to-image sampling throughput: liquid_jax's sampler vs upstream's loop.

One random decoder (Llama layout, d_model 512, 8 layers, 32000 text tokens + 8192 image
codes), 4 images of 16x16 = 256 codes with classifier-free guidance (8 rows), guidance_scale 7,
temperature 0.99, top-k 4096, top-p 0.96. The reference is upstream's algorithm with
torch and transformers (KV cache, full-vocabulary logits, both halves in one batch, the
same filters); ours is the jitted prefill + while_loop computing only the image rows
of the LM head. Both run float32 on this machine's CPU, one after the other, in one
process that (like ``liquid-jax``) runs with huge-page malloc; our compile time is
reported separately and not counted.

  python benchmarks/sample_throughput.py [--out benchmarks/results/sample_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the torch reference loop lives with the tests

from liquid_jax import host_memory  # noqa: E402

host_memory.reexec_with_hugepages()  # as `liquid-jax sample` does

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from helpers.upstream_t2i import upstream_t2i  # noqa: E402
from liquid_jax.convert.hf_mapping import config_from_hf, params_from_hf  # noqa: E402
from liquid_jax.model.config import SpecialTokens  # noqa: E402
from liquid_jax.model.transformer import from_params  # noqa: E402
from liquid_jax.sample.decode_loop import generate_tokens  # noqa: E402
from liquid_jax.sample.filters import SamplingParams  # noqa: E402

CONFIG = dict(
    d_model=512, layers=8, heads=8, kv_heads=8, head_dim=64, mlp_dim=2048,
    text_vocab=32000, image_codes=8192, grid=(16, 16), images=4, prompt_tokens=24,
    guidance_scale=7.0, temperature=0.99, top_k=4096, top_p=0.96, dtype="float32",
)
SPECIAL = SpecialTokens(bos=1, eos=2, pad=0, boi=3, eoi=4, unconditional=5)


def build_models():
    c = CONFIG
    hf_config = transformers.LlamaConfig(
        vocab_size=c["text_vocab"] + c["image_codes"], hidden_size=c["d_model"],
        intermediate_size=c["mlp_dim"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"], max_position_embeddings=2048,
        bos_token_id=SPECIAL.bos, eos_token_id=SPECIAL.eos, pad_token_id=SPECIAL.pad,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    config = config_from_hf(hf_config.to_dict(), num_image_codes=c["image_codes"], special_tokens=SPECIAL)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    return hf, from_params(config, params_from_hf(config, state.__getitem__))


def prompt_rows() -> list[list[int]]:
    rng = np.random.default_rng(0)
    n = CONFIG["images"]
    conditional = [
        [SPECIAL.bos] + rng.integers(10, CONFIG["text_vocab"], CONFIG["prompt_tokens"] - i).tolist() + [SPECIAL.boi]
        for i in range(n)
    ]
    return conditional + [[SPECIAL.bos, SPECIAL.unconditional, SPECIAL.boi]] * n


def run_ours(model, rows, seed):
    c = CONFIG
    return generate_tokens(
        model, rows, c["grid"][0] * c["grid"][1],
        sampling=SamplingParams(temperature=c["temperature"], top_k=c["top_k"], top_p=c["top_p"]),
        seed=seed, vocab_range=(c["text_vocab"], c["text_vocab"] + c["image_codes"]),
        guidance_scale=c["guidance_scale"],
    )


def run_reference(hf, rows, seed):
    c = CONFIG
    return upstream_t2i(hf, rows, c["grid"][0] * c["grid"][1], c["text_vocab"], c["guidance_scale"],
                        c["temperature"], c["top_k"], c["top_p"], seed=seed, pad_id=SPECIAL.pad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "sample_throughput.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()
    hf, model = build_models()
    rows = prompt_rows()
    image_tokens = CONFIG["images"] * CONFIG["grid"][0] * CONFIG["grid"][1]

    start = time.perf_counter()
    run_ours(model, rows, seed=0)  # compiles
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    run_ours(model, rows, seed=1)
    ours_seconds = time.perf_counter() - start

    start = time.perf_counter()
    run_reference(hf, rows, seed=1)
    reference_seconds = time.perf_counter() - start

    ours, reference = image_tokens / ours_seconds, image_tokens / reference_seconds
    result = {
        "ours_tokens_per_s": ours,
        "reference_tokens_per_s": reference,
        "ratio": ours / reference,
        "config": CONFIG,
        "ours_seconds": ours_seconds,
        "ours_compile_seconds": first_call - ours_seconds,
        "reference_seconds": reference_seconds,
        "image_tokens": image_tokens,
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        # The 1-minute load average before and after: other work on a shared machine slows
        # both runs, torch's thread pool usually more.
        "load_average": [load_before[0], os.getloadavg()[0]],
        "torch_threads": torch.get_num_threads(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "versions": {"jax": jax.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("ours_tokens_per_s", "reference_tokens_per_s", "ratio")}))


if __name__ == "__main__":
    main()
