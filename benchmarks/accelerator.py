"""Accelerator benchmark: train-step tokens/s and MFU, guided text-to-image tokens/s vs upstream.

On a machine with a GPU (jax with CUDA, torch and transformers installed) or a TPU VM (jax
for TPU, plus CPU builds of torch and transformers), from the repository root; nothing is
downloaded (all weights are random). Expected run time: about 6 minutes on one H200 (under
8); ``--parts train`` or ``--parts t2i`` runs one half:

    pip install -e . --no-deps
    pip install ml-collections
    python benchmarks/accelerator.py --out benchmarks/results/accelerator.json

Without internet on that machine, fetch the wheel elsewhere (``pip download ml-collections
--no-deps -d wheels``) and ``pip install --no-index wheels/*.whl`` there. Grain and the other
data-pipeline dependencies are not needed.

On a CPU, with tiny shapes (the test suite runs this; about a minute on 2 cores):

    python benchmarks/accelerator.py --tiny --out /tmp/accelerator_tiny.json

(a) ``train/<run>/<attention>``: the training step of ``configs/llama3_2_1b_liquid.py`` and
``configs/gemma2_2b_liquid.py`` (bf16 compute, float32 params and AdamW state, scanned
layers, full remat, 2048-token rows, as those configs set them) on random tokens, with
``model.attention="xla"`` and with the platform's fused kernel ("splash" on TPU,
"flash_gpu" on GPU; on CPU flash_gpu in Pallas interpret mode). Rows: ``--rows_per_device``
times the local devices, FSDP over all of them. Compilation is timed apart; tokens/s is
the median of ``--steps`` steps after one warm-up step; MFU is model FLOPs per token
(``liquid_jax.train.flops.training_flops_per_token``: 6 x matmul params plus causal
attention, remat recomputation not counted) times tokens/s over the chips' published dense
bf16 peak (``liquid_jax.train.chips``); null on a CPU.

(b) ``t2i/<model>``: guided generation of 4 images of 32x32 codes (8 rows with the
unconditional halves; upstream's defaults guidance_scale 7, temperature 0.99, top-k 4096, top-p 0.96)
by a Gemma-7B-shaped decoder with random bf16 weights (d_model 3072, 28 layers, 16 heads of
256, MLP 24576, 256000 text tokens + 8192 image codes), built once with transformers on the
device and converted to liquid_jax. Ours: ``liquid_jax.sample.decode_loop.generate_tokens``
(its first call, which compiles, is timed apart); upstream's loop
(``tests/helpers/upstream_t2i.py``: transformers with a KV cache and SDPA attention, full
vocabulary logits) on the same device; image tokens/s of each and their ratio. PyTorch has
no TPU backend here, so on a TPU the upstream side is skipped.

JAX does not preallocate GPU memory here (``XLA_PYTHON_CLIENT_PREALLOCATE=false``): PyTorch
shares the GPU in (b). A measurement that fails is recorded with its error, the others still
run, and the script then exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # upstream's sampling loop lives with the tests

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from liquid_jax.model.attention import KERNEL_PLATFORMS  # noqa: E402
from liquid_jax.model.config import SpecialTokens, TransformerConfig, load_model_config  # noqa: E402
from liquid_jax.sharding import make_mesh  # noqa: E402
from liquid_jax.train import flops  # noqa: E402
from liquid_jax.train import optimizer as optimizer_lib  # noqa: E402
from liquid_jax.train import state as state_lib  # noqa: E402
from liquid_jax.train import train_step as step_lib  # noqa: E402

CONFIGS = os.path.join(ROOT, "configs")
# What configs/*_liquid.py set through liquid_jax.train.config.scaling_run_config, which
# imports the Grain data pipeline (not installed on every accelerator machine); the test
# checks these against the real config files.
SCALING_RUN_MODEL = dict(remat="full", scan_layers=True, dtype="bfloat16", param_dtype="float32")
SCALING_RUN_OPTIMIZER = dict(
    learning_rate=2e-5, schedule="constant", warmup_fraction=0.03, warmup_steps=-1, end_lr_fraction=0.0,
    weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=1.0,
)
SCALING_RUN_TRAIN = dict(z_loss=0.0, loss_chunk_size=16_384, grad_accum_steps=1)
SCALING_RUN_SEQ_LEN = 2048

# run name -> model config file; the run mirrors configs/<run name>.py.
TRAIN_RUNS = {"llama3_2_1b_liquid": "llama3_2_1b.py", "gemma2_2b_liquid": "gemma2_2b.py"}
TINY_TRAIN_RUNS = {"tiny_llama": "tiny_llama.py", "tiny_gemma2": "tiny_gemma2.py"}
TINY_SEQ_LEN = 64  # a multiple of the flash_gpu block; tiny_gemma2's window (16) is shorter

UPSTREAM_SAMPLING = dict(guidance_scale=7.0, temperature=0.99, top_k=4096, top_p=0.96)  # upstream's inference_t2i.py
T2I = dict(
    name="gemma_7b_shape", d_model=3072, layers=28, heads=16, kv_heads=16, head_dim=256, mlp_dim=24_576,
    text_vocab=256_000, image_codes=8192, grid=(32, 32), images=4, prompt_tokens=24, dtype="bfloat16",
    **UPSTREAM_SAMPLING,
)
TINY_T2I = dict(
    T2I, name="tiny_gemma", d_model=64, layers=2, heads=4, kv_heads=4, head_dim=16, mlp_dim=128,
    text_vocab=320, image_codes=64, grid=(8, 8), top_k=32,  # top-k: half the codes
)
SPECIAL = SpecialTokens()  # Gemma's ids


def kernel_for(platform_name: str) -> str:
    """The fused attention kernel of a jax platform; on CPU flash_gpu (interpret mode)."""
    by_platform = {p: name for name, p in KERNEL_PLATFORMS.items()}
    return by_platform.get(platform_name, "flash_gpu")


def train_model_config(model_file: str) -> TransformerConfig:
    """The model of a scaling run on ``configs/<model_file>``, attention not yet chosen."""
    return load_model_config(os.path.join(CONFIGS, model_file), **SCALING_RUN_MODEL)


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise FloatingPointError(f"non-finite value {x}")
    return x


# ----------------------------------------------------------------------------- (a) train


class TrainRun:
    """One run's params and optimizer state on the mesh, stepped with any attention."""

    def __init__(self, model: TransformerConfig, seq_len: int, rows: int, mesh):
        self.model, self.mesh = model, mesh
        step_lib.check_batch_size(rows, mesh, SCALING_RUN_TRAIN["grad_accum_steps"])
        self.tx, self.schedule = optimizer_lib.make_optimizer(
            ml_collections.ConfigDict(SCALING_RUN_OPTIMIZER), total_steps=1000)
        start = time.perf_counter()
        # The values only need to be random; XLA:CPU compiles the rbg generator about 3x
        # faster than threefry, which halves --tiny's initialisation.
        with jax.default_prng_impl("rbg"):
            parts = state_lib.init_parts(model, mesh, seed=0)
        self.rest = parts.rest
        self.opt_shardings = state_lib.opt_state_shardings(self.tx, parts.params, mesh)
        self.params = parts.params
        self.opt_state = state_lib.init_opt_state(self.tx, parts.params, self.opt_shardings)
        jax.block_until_ready((self.params, self.opt_state))
        self.init_seconds = time.perf_counter() - start
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, model.vocab_size, (rows, seq_len + 1)).astype(np.int32)
        host = {
            "tokens": tokens[:, :-1], "targets": tokens[:, 1:],
            "loss_mask": np.ones((rows, seq_len), np.int32), "segment_ids": np.ones((rows, seq_len), np.int32),
            "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len)),
        }
        sharding = step_lib.batch_sharding(mesh)
        self.batch = {k: jax.device_put(host[k], sharding) for k in step_lib.BATCH_KEYS}

    def measure(self, attention: str, steps: int) -> dict[str, Any]:
        """Compile seconds, step seconds and losses of ``steps`` timed steps with ``attention``;
        the run's state carries on from the previous measurement (throughput does not
        depend on the values)."""
        model = self.model.replace(attention=attention)
        parts = state_lib.abstract_parts(model, self.mesh)
        options = step_lib.StepOptions(
            vocab_size=model.vocab_size, text_vocab_size=model.text_vocab_size,
            z_loss_coef=SCALING_RUN_TRAIN["z_loss"], loss_chunk_size=SCALING_RUN_TRAIN["loss_chunk_size"],
            grad_accum_steps=SCALING_RUN_TRAIN["grad_accum_steps"],
        )
        step = step_lib.jit_train_step(
            step_lib.make_train_step(parts.graphdef, self.rest, self.tx, self.schedule, options),
            parts.param_shardings, self.opt_shardings, self.mesh,
        )
        with jax.set_mesh(self.mesh):
            start = time.perf_counter()
            compiled = step.lower(self.params, self.opt_state, self.batch).compile()
            compile_seconds = time.perf_counter() - start
            seconds, losses = [], []
            for _ in range(steps + 1):  # the first is a warm-up
                start = time.perf_counter()
                self.params, self.opt_state, metrics = compiled(self.params, self.opt_state, self.batch)
                losses.append(_finite(float(metrics["loss"])))
                seconds.append(time.perf_counter() - start)
        return {"compile_seconds": compile_seconds, "warmup_step_seconds": seconds[0],
                "step_seconds": seconds[1:], "losses": losses}


def train_measurements(runs: dict[str, str], seq_len: int, rows_per_device: int, steps: int,
                       record: Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]) -> None:
    """(a) for each run: XLA attention, then the platform's kernel."""
    devices = jax.devices()
    mesh = make_mesh((1, -1, 1))  # the scaling runs' mesh: FSDP over every chip
    rows = rows_per_device * len(devices)
    peak = flops.peak_flops_per_device(devices[0])
    for run_name, model_file in runs.items():
        model = train_model_config(model_file)
        flops_per_token = flops.training_flops_per_token(model, seq_len)
        state: dict[str, TrainRun] = {}
        for attention in ("xla", kernel_for(devices[0].platform)):
            entry = {
                "name": f"train/{run_name}/{attention}", "kind": "train", "attention": attention,
                "interpret_mode": attention != "xla" and KERNEL_PLATFORMS[attention] != devices[0].platform,
                "config": {
                    "run": f"configs/{run_name}.py", "model": model.replace(attention=attention).to_dict(),
                    "seq_len": seq_len, "rows": rows, "devices": len(devices),
                    "optimizer": SCALING_RUN_OPTIMIZER, "train": SCALING_RUN_TRAIN,
                },
                "model_flops_per_token": flops_per_token,
            }

            def run(attention=attention) -> dict[str, Any]:
                if "run" not in state:
                    state["run"] = TrainRun(model, seq_len, rows, mesh)
                try:
                    timed = state["run"].measure(attention, steps)
                except Exception:
                    state.clear()  # its state may have been donated: the next attention starts anew
                    raise
                tokens_per_s = rows * seq_len / statistics.median(timed["step_seconds"])
                result = {"tokens_per_s": tokens_per_s, "init_seconds": state["run"].init_seconds, **timed}
                if peak is None:
                    result.update(mfu=None, mfu_reason=f"no published bf16 peak for device kind "
                                                       f"{devices[0].device_kind!r} (liquid_jax.train.chips)")
                else:
                    result.update(mfu=tokens_per_s * flops_per_token / (peak * len(devices)),
                                  peak_flops_per_device=peak)
                return result

            record(entry, run)
        state.clear()


# ----------------------------------------------------------------------------- (b) t2i


def _torch_device(platform_name: str) -> str | None:
    """Where the upstream loop runs next to jax's devices (None: no PyTorch backend)."""
    return {"gpu": "cuda", "cpu": "cpu"}.get(platform_name)


def build_t2i_models(c: dict[str, Any], torch_device: str):
    """(transformers GemmaForCausalLM, our Transformer) holding the same random bf16 weights.

    The transformers model is built on ``torch_device``; each tensor then travels to the
    host once, into the stacked arrays ``params_from_hf`` fills, and those to jax's device.
    """
    import torch
    import transformers

    from liquid_jax.convert.hf_mapping import config_from_hf, params_from_hf
    from liquid_jax.model.transformer import from_params

    hf_config = transformers.GemmaConfig(
        vocab_size=c["text_vocab"] + c["image_codes"], hidden_size=c["d_model"], intermediate_size=c["mlp_dim"],
        num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"],
        head_dim=c["head_dim"], hidden_act="gelu_pytorch_tanh", max_position_embeddings=8192,
        bos_token_id=SPECIAL.bos, eos_token_id=SPECIAL.eos, pad_token_id=SPECIAL.pad,
    )
    torch.manual_seed(0)
    with torch.device(torch_device):
        hf = transformers.AutoModelForCausalLM.from_config(
            hf_config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    config = config_from_hf(hf_config.to_dict(), num_image_codes=c["image_codes"], special_tokens=SPECIAL,
                            dtype=c["dtype"], param_dtype=c["dtype"])
    state = hf.state_dict()

    def host(name: str) -> np.ndarray:  # torch's bfloat16 has no numpy view: move the bits
        return state[name].detach().view(torch.int16).cpu().numpy().view(jnp.bfloat16)

    return hf, from_params(config, params_from_hf(config, host))


def t2i_prompts(c: dict[str, Any]) -> list[list[int]]:
    """Conditional rows of random text ending in <boi>, then as many unconditional rows."""
    rng = np.random.default_rng(0)
    n = c["images"]
    conditional = [
        [SPECIAL.bos] + rng.integers(10, c["text_vocab"], c["prompt_tokens"] - i).tolist() + [SPECIAL.boi]
        for i in range(n)
    ]
    return conditional + [[SPECIAL.bos, SPECIAL.unconditional, SPECIAL.boi]] * n


def t2i_measurement(c: dict[str, Any], upstream: bool) -> dict[str, Any]:
    """(b): ours, then (with ``upstream``) upstream's loop, on the same prompts."""
    from liquid_jax.sample.decode_loop import generate_tokens
    from liquid_jax.sample.filters import SamplingParams

    platform_name = jax.devices()[0].platform
    torch_device = _torch_device(platform_name) or "cpu"  # a TPU run builds the weights on the host
    start = time.perf_counter()
    hf, model = build_t2i_models(c, torch_device)
    build_seconds = time.perf_counter() - start
    rows = t2i_prompts(c)
    steps = c["grid"][0] * c["grid"][1]
    image_tokens = c["images"] * steps
    vocab = (c["text_vocab"], c["text_vocab"] + c["image_codes"])

    def ours(seed: int) -> np.ndarray:
        sampling = SamplingParams(temperature=c["temperature"], top_k=c["top_k"], top_p=c["top_p"])
        tokens = generate_tokens(model, rows, steps, sampling=sampling, seed=seed, vocab_range=vocab,
                                 guidance_scale=c["guidance_scale"]).tokens
        if tokens.shape != (len(rows), steps) or not ((tokens >= vocab[0]) & (tokens < vocab[1])).all():
            raise AssertionError(f"our sampler returned tokens {tokens.shape} outside the image codes {vocab}")
        return tokens

    start = time.perf_counter()
    ours(seed=0)  # compiles
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    ours(seed=1)
    ours_seconds = time.perf_counter() - start
    result = {
        "tokens_per_s": image_tokens / ours_seconds, "ours_seconds": ours_seconds,
        "compile_seconds": max(first_call - ours_seconds, 0.0), "image_tokens": image_tokens,
        "build_seconds": build_seconds, "mfu": None,
        "mfu_reason": "decoding is bound by memory bandwidth; reported as image tokens/s",
    }
    if not upstream:
        result.update(upstream_skipped=f"PyTorch has no backend for {platform_name} devices here",
                      upstream_tokens_per_s=None, ratio=None)
        return result

    import torch
    from helpers.upstream_t2i import upstream_t2i

    def reference(n: int) -> np.ndarray:
        codes = upstream_t2i(hf, rows, n, c["text_vocab"], c["guidance_scale"], c["temperature"], c["top_k"],
                             c["top_p"], seed=1, pad_id=SPECIAL.pad)
        if codes.shape != (len(rows) // 2, n) or not ((codes >= 0) & (codes < c["image_codes"])).all():
            raise AssertionError(f"upstream's loop returned codes {codes.shape} outside [0, {c['image_codes']})")
        return codes

    try:  # a failure here keeps our numbers
        reference(4)  # CUDA/cuBLAS initialisation and SDPA kernel choice, not timed
        start = time.perf_counter()
        reference(steps)
        upstream_seconds = time.perf_counter() - start
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return {**result, "error": f"upstream: {type(e).__name__}: {e}"}
    upstream_tps = image_tokens / upstream_seconds
    result.update(upstream_tokens_per_s=upstream_tps, upstream_seconds=upstream_seconds,
                  ratio=result["tokens_per_s"] / upstream_tps, upstream_device=str(hf.device),
                  upstream_attention="sdpa", torch_threads=torch.get_num_threads())
    return result


# ----------------------------------------------------------------------------- main


def environment() -> dict[str, Any]:
    device = jax.devices()[0]
    versions = {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__}
    for name in ("jaxlib", "torch", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"device_kind": device.device_kind, "platform": device.platform,
            "device_count": jax.device_count(), "versions": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU; what the test suite runs)")
    parser.add_argument("--parts", default="train,t2i", help="comma-separated: train, t2i")
    parser.add_argument("--steps", type=int, default=None, help="timed train steps (default 5; tiny 2)")
    parser.add_argument("--rows_per_device", type=int, default=None, help="train rows per chip (8; tiny 2)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"train", "t2i"}:
        parser.error(f"--parts {args.parts!r}: expected a comma-separated subset of train,t2i")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax's backend starts
    env = environment()
    if env["platform"] == "cpu" and not args.tiny:
        parser.error("full-size shapes need a GPU or TPU (jax sees only the CPU); add --tiny")

    measurements: list[dict[str, Any]] = []
    started = time.perf_counter()

    def record(entry: dict[str, Any], run: Callable[[], dict[str, Any]]) -> None:
        entry.update(device_kind=env["device_kind"], versions=env["versions"])
        print(f"{entry['name']}: running", file=sys.stderr, flush=True)
        try:
            entry.update(run())
        except Exception as e:  # noqa: BLE001 - one failure must not lose the other numbers
            traceback.print_exc()
            entry["error"] = f"{type(e).__name__}: {e}"
        measurements.append(entry)

    if "train" in parts:
        train_measurements(
            TINY_TRAIN_RUNS if args.tiny else TRAIN_RUNS, TINY_SEQ_LEN if args.tiny else SCALING_RUN_SEQ_LEN,
            args.rows_per_device or (2 if args.tiny else 8), args.steps or (2 if args.tiny else 5), record,
        )
    if "t2i" in parts:
        c = TINY_T2I if args.tiny else T2I
        upstream = _torch_device(env["platform"]) is not None
        entry = {"name": f"t2i/{c['name']}", "kind": "t2i", "attention": "xla (KV cache)", "config": c}
        record(entry, lambda: t2i_measurement(c, upstream))

    result = {**env, "tiny": args.tiny, "total_seconds": time.perf_counter() - started,
              "measurements": measurements}
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(out + ".tmp", out)
    for m in measurements:
        extra = f" upstream {m['upstream_tokens_per_s']:.1f} ratio {m['ratio']:.2f}" if m.get("ratio") else ""
        mfu = f" MFU {m['mfu']:.3f}" if m.get("mfu") is not None else ""
        outcome = m.get("error") or f"{m['tokens_per_s']:.1f} tokens/s{mfu}{extra}"
        print(f"{m['name']}: {outcome}")
    if any("error" in m for m in measurements):
        sys.exit(1)


if __name__ == "__main__":
    main()
