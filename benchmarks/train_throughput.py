"""Training throughput on this machine: liquid_jax's trainer vs transformers + PyTorch.

One small Llama-style model (d_model 512, 8 layers, 32k text + 8192 image vocabulary,
rows of 512 tokens) is trained for the same number of steps on the same random batches
by ``liquid_jax.train.trainer.train`` and by ``LlamaForCausalLM`` with ``torch.optim.AdamW``,
both in float32 on the CPU. The machine's matmul peak is measured in the same run, and
MFU is model FLOP/s against it.

Our run uses the settings a user of this model size would pick: scanned layers, no
remat, and ``train.loss_chunk_size=0`` (one vocabulary chunk: the [2048, 40192] fp32
logits fit easily, so the LM-head matmul is not recomputed). Like ``liquid-jax``, the
script first restarts itself with huge-page malloc (``liquid_jax.host_memory``); the
PyTorch reference runs in the same process, so it gets the same allocator.

    python benchmarks/train_throughput.py [--steps 8] [--out benchmarks/results/train_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from liquid_jax import host_memory  # noqa: E402

host_memory.reexec_with_hugepages()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tqdm import tqdm  # noqa: E402

from liquid_jax import machine  # noqa: E402
from liquid_jax.model.config import TransformerConfig, model_config_dict  # noqa: E402
from liquid_jax.sharding import make_mesh  # noqa: E402
from liquid_jax.train import config as config_lib  # noqa: E402
from liquid_jax.train import flops, metrics, trainer  # noqa: E402
from liquid_jax.train import train_step as step_lib  # noqa: E402

TEXT_VOCAB, IMAGE_CODES = 32_000, 8192
D_MODEL, LAYERS, HEADS, MLP = 512, 8, 8, 2048
BATCH, SEQ = 4, 512
LEARNING_RATE = 1e-4


def random_batches(steps: int) -> list[np.ndarray]:
    """``steps`` arrays of token ids [BATCH, SEQ + 1] (inputs and shifted targets)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, TEXT_VOCAB + IMAGE_CODES, (BATCH, SEQ + 1)).astype(np.int32) for _ in range(steps)]


def run_config(steps: int):
    model = model_config_dict(
        "llama", text_vocab_size=TEXT_VOCAB, num_image_codes=IMAGE_CODES, d_model=D_MODEL,
        num_layers=LAYERS, num_heads=HEADS, num_kv_heads=HEADS, head_dim=D_MODEL // HEADS,
        mlp_dim=MLP, tie_embeddings=True, max_position_embeddings=SEQ,
    )
    config = config_lib.train_config(model)
    config.model.dtype = "float32"
    config.model.scan_layers = True
    config.data.batch_size, config.data.seq_len = BATCH, SEQ
    config.optimizer.learning_rate = LEARNING_RATE
    config.optimizer.warmup_steps = 0
    config.optimizer.schedule = "constant"
    config.train.steps = steps
    config.train.loss_chunk_size = 0
    config.checkpoint.every = 10**9  # only the final save
    return config


class Batches:
    """The shared batches as a trainer data iterator."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays, self.index = arrays, 0
        self.sharding = step_lib.batch_sharding(make_mesh((-1, 1, 1)))

    def __next__(self):
        rows = self.arrays[self.index]
        self.index += 1
        host = {
            "tokens": rows[:, :-1], "targets": rows[:, 1:],
            "loss_mask": np.ones((BATCH, SEQ), np.int32), "segment_ids": np.ones((BATCH, SEQ), np.int32),
            "positions": np.broadcast_to(np.arange(SEQ, dtype=np.int32), (BATCH, SEQ)),
        }
        return {k: jax.device_put(v, self.sharding) for k, v in host.items()}

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = state["index"]


def ours(batches: list[np.ndarray]) -> tuple[float, list[float]]:
    """Median steady-state tokens/s (first step = compilation excluded) and losses."""
    config = run_config(len(batches))
    with tempfile.TemporaryDirectory() as workdir:
        trainer.train(config, workdir, data=Batches(batches))
        records = metrics.read_jsonl(os.path.join(workdir, metrics.JSONL_NAME))
    seconds = statistics.median(r["step_seconds"] for r in records[1:])
    return BATCH * SEQ / seconds, [r["loss"] for r in records]


def reference(batches: list[np.ndarray]) -> tuple[float, list[float]]:
    """The same steps with transformers' LlamaForCausalLM and torch AdamW."""
    torch.manual_seed(0)
    hf = transformers.LlamaConfig(
        vocab_size=TEXT_VOCAB + IMAGE_CODES, hidden_size=D_MODEL, intermediate_size=MLP,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        max_position_embeddings=SEQ, tie_word_embeddings=True, rms_norm_eps=1e-5,
    )
    model = transformers.LlamaForCausalLM(hf).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    times, losses = [], []
    for rows in tqdm(batches, desc="transformers", unit="step"):
        rows = torch.from_numpy(rows.astype(np.int64))
        start = time.perf_counter()
        logits = model(input_ids=rows[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return BATCH * SEQ / statistics.median(times[1:]), losses


def matmul_peak(size: int = 2048, repeats: int = 20) -> float:
    """Best float32 matmul FLOP/s of XLA and PyTorch on this machine."""
    best = machine.matmul_peak_gflops(repeats, size) * 1e9
    t = torch.ones(size, size)
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(t, t)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


FLOPS_FORMULA = (
    "6 * (num_layers * (d_model * head_dim * (2 * num_heads + 2 * num_kv_heads) + 3 * d_model * mlp_dim)"
    " + d_model * vocab_size + num_layers * seq_len * num_heads * head_dim) per token: forward + backward"
    " matmuls of all weights (LM head included) plus causal attention scores and values"
)


def load_average() -> float:
    """The 1-minute load average (other processes distort CPU timings)."""
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_throughput.json")
    )
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")
    batches = random_batches(args.steps)

    loads = [load_average()]
    peak = matmul_peak()
    ours_tps, ours_losses = ours(batches)
    loads.append(load_average())
    ref_tps, ref_losses = reference(batches)
    loads.append(load_average())
    peak_after = matmul_peak()
    run = run_config(args.steps)
    model = TransformerConfig.from_dict(run.model.to_dict())
    flops_per_token = flops.training_flops_per_token(model, SEQ)
    measured_peak = max(peak, peak_after)
    result = {
        "ours_tokens_per_s": ours_tps,
        "reference_tokens_per_s": ref_tps,
        "ratio": ours_tps / ref_tps,
        "mfu": ours_tps * flops_per_token / measured_peak,
        "reference_mfu": ref_tps * flops_per_token / measured_peak,
        "matmul_peak_flops": measured_peak,
        "flops_per_token": flops_per_token,
        "flops_formula": FLOPS_FORMULA,
        "conditions": {
            "load_average_start_after_ours_after_reference": loads,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "ours_losses": ours_losses,
        "reference_losses": ref_losses,
        "config": {
            "family": "llama", "d_model": D_MODEL, "num_layers": LAYERS, "num_heads": HEADS,
            "mlp_dim": MLP, "vocab_size": TEXT_VOCAB + IMAGE_CODES, "batch_size": BATCH,
            "seq_len": SEQ, "steps": args.steps, "dtype": "float32", "scan_layers": model.scan_layers,
            "remat": model.remat, "loss_chunk_size": run.train.loss_chunk_size,
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        },
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("losses")}, indent=2))


if __name__ == "__main__":
    main()
