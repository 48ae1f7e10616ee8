"""Model FLOPs per token, and the peak FLOP/s of this machine's accelerator, for MFU estimates."""

from __future__ import annotations

import jax

from liquid_jax.model.config import TransformerConfig
from liquid_jax.train import chips

def forward_flops_per_token(config: TransformerConfig, seq_len: int) -> dict[str, float]:
    """Forward matmul FLOPs per token by part: ``projections`` (q, k, v, o), causal
    ``attention`` (QK^T and AV over half the row on average), gated ``mlp`` and the LM
    ``head``; the input-embedding gather costs nothing."""
    d, hd, layers = config.d_model, config.head_dim, config.num_layers
    return {
        "projections": 2.0 * layers * d * hd * (2 * config.num_heads + 2 * config.num_kv_heads),
        "attention": 2.0 * layers * seq_len * config.num_heads * hd,
        "mlp": 2.0 * layers * 3 * d * config.mlp_dim,
        "head": 2.0 * d * config.vocab_size,
    }


def training_flops_per_token(config: TransformerConfig, seq_len: int) -> float:
    """Forward + backward matmul FLOPs per trained token: 3x the forward (6 x matmul
    params, plus causal attention scores and values)."""
    return 3.0 * sum(forward_flops_per_token(config, seq_len).values())


# Forward parts a remat policy computes again in the backward pass (matmuls only). With an
# attention kernel the kernel call is not a dot, so dot-saving policies recompute it; a
# flash-style kernel's backward recomputes the scores on its own (KERNEL_BACKWARD_EXTRA).
_RECOMPUTED = {
    "none": {},
    "full": {"projections": 1.0, "attention": 1.0, "mlp": 1.0},
    "dots": {},
    "dots_no_batch": {"attention": 1.0},
    "save_qkv_proj": {"attention": 1.0, "out_projection": 1.0, "mlp": 1.0},
    "minimal": {"attention": 0.5},  # the context is saved, the softmax scores are not
    "minimal_offloaded": {"attention": 0.5},
}
_KERNEL_RECOMPUTED = {"dots": {"attention": 1.0}, "minimal": {}, "minimal_offloaded": {}}
KERNEL_BACKWARD_EXTRA = 0.5  # flash backward: scores once more, half the forward attention


def step_flops_per_token(config: TransformerConfig, seq_len: int, remat: str, kernel: bool) -> float:
    """Matmul FLOPs per trained token that a step executes: the forward, twice that for
    the backward, what ``remat`` recomputes and, with an attention ``kernel``, its backward's
    extra score pass."""
    parts = forward_flops_per_token(config, seq_len)
    recomputed = (_KERNEL_RECOMPUTED.get(remat, _RECOMPUTED[remat]) if kernel else _RECOMPUTED[remat])
    out_share = config.num_heads / (2 * config.num_heads + 2 * config.num_kv_heads)
    extra = sum(share * (parts["projections"] * out_share if part == "out_projection" else parts[part])
                for part, share in recomputed.items())
    if kernel:
        extra += KERNEL_BACKWARD_EXTRA * parts["attention"]
    return 3.0 * sum(parts.values()) + extra


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """Vendor dense bf16 peak for the device's chip, or None when unknown (e.g. CPU)."""
    chip = chips.chip_of(device)
    return None if chip is None else chip.bf16_flops
