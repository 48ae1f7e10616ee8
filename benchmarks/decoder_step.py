"""Decoder speed on this machine: training step variants, KV-cache decoding, and
transformers (PyTorch eager) on the same weights for comparison.

  python benchmarks/decoder_step.py --family=gemma2 --d_model=512 --layers=4 --length=512

Times (median of --repeats after one warm-up call) the jitted forward pass, forward +
backward for each (scan_layers, remat) setting, one decode step with a KV cache, and the
Hugging Face model's forward on the same batch. Results go to
benchmarks/results/decoder_step.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from absl import app, flags
from flax import nnx
from tqdm import tqdm

from liquid_jax.convert.hf_mapping import config_to_hf, params_to_hf
from liquid_jax.model.config import FAMILY_DEFAULTS, TransformerConfig
from liquid_jax.model.kv_cache import KVCache
from liquid_jax.model.transformer import Transformer, from_params

_FAMILY = flags.DEFINE_enum("family", "gemma2", sorted(FAMILY_DEFAULTS), "Architecture.")
_D_MODEL = flags.DEFINE_integer("d_model", 512, "Hidden size (head_dim 64, mlp 4x).")
_LAYERS = flags.DEFINE_integer("layers", 4, "Number of layers.")
_VOCAB = flags.DEFINE_integer("vocab", 32_000, "Vocabulary size.")
_BATCH = flags.DEFINE_integer("batch", 2, "Sequences per batch.")
_LENGTH = flags.DEFINE_integer("length", 512, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement.")
_OUT = flags.DEFINE_string(
    "out", os.path.join(os.path.dirname(__file__), "results", "decoder_step.json"), "JSON output."
)


def _median_seconds(fn) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(_REPEATS.value):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _config() -> TransformerConfig:
    d = _D_MODEL.value
    heads = d // 64
    fields = dict(FAMILY_DEFAULTS[_FAMILY.value])
    if _FAMILY.value == "gemma2":
        fields.update(sliding_window=_LENGTH.value // 4, query_pre_attn_scalar=64.0)
    return TransformerConfig(
        family=_FAMILY.value, vocab_size=_VOCAB.value, d_model=d, num_layers=_LAYERS.value,
        num_heads=heads, num_kv_heads=max(1, heads // 2), head_dim=64, mlp_dim=4 * d, **fields,
    )


def main(argv):
    del argv
    config = _config()
    tokens_np = np.random.default_rng(0).integers(0, config.vocab_size, (_BATCH.value, _LENGTH.value))
    tokens = jnp.asarray(tokens_np, jnp.int32)
    n_tokens = tokens.size
    params = nnx.to_pure_dict(nnx.state(Transformer(config, rngs=nnx.Rngs(0))))
    results = {}

    variants = [(False, "none"), (True, "none"), (True, "full"), (True, "dots_no_batch")]
    for scan, remat in tqdm(variants, desc="train step variants"):
        variant = config.replace(scan_layers=scan, remat=remat)
        graphdef, state = nnx.split(from_params(variant, params))

        def loss(state):
            logits, _ = nnx.merge(graphdef, state)(tokens)
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

        forward = jax.jit(loss)
        backward = jax.jit(jax.grad(loss))
        key = f"scan={scan},remat={remat}"
        fwd = _median_seconds(lambda: forward(state))
        bwd = _median_seconds(lambda: backward(state))
        results[key] = {
            "forward_tokens_per_s": n_tokens / fwd,
            "forward_backward_tokens_per_s": n_tokens / bwd,
        }

    graphdef, state = nnx.split(from_params(config.replace(scan_layers=True), params))
    decode = jax.jit(lambda s, t, c: nnx.merge(graphdef, s)(t, cache=c))
    cache = KVCache.init(config, _BATCH.value, _LENGTH.value + 8)
    _, cache = decode(state, tokens, cache)
    step = tokens[:, :1]
    seconds = _median_seconds(lambda: decode(state, step, cache)[0])
    results["decode_step"] = {"cache_length": _LENGTH.value, "tokens_per_s": _BATCH.value / seconds,
                              "ms_per_step": 1000 * seconds}

    hf_config = transformers.AutoConfig.for_model(**config_to_hf(config))
    hf_config._attn_implementation = "eager"
    hf_model = transformers.AutoModelForCausalLM.from_config(hf_config).eval()
    weights = {name: torch.tensor(t) for name, t in params_to_hf(config, params)}
    missing, unexpected = hf_model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"weights do not fit transformers: missing {missing}, unexpected {unexpected}")
    torch_tokens = torch.as_tensor(tokens_np)
    with torch.no_grad():
        seconds = _median_seconds(lambda: hf_model(input_ids=torch_tokens).logits)
    results["transformers_eager_forward"] = {"tokens_per_s": n_tokens / seconds,
                                            "torch_threads": torch.get_num_threads()}

    report = {
        "config": config.to_dict(),
        "batch": _BATCH.value,
        "length": _LENGTH.value,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
