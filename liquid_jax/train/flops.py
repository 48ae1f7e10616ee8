"""Model FLOPs per token and the peak FLOP/s of accelerators, for MFU estimates."""

from __future__ import annotations

import jax

from liquid_jax.model.config import TransformerConfig

# Dense bf16 peak FLOP/s per chip (vendor figures) by jax device_kind prefix.
PEAK_FLOPS_PER_DEVICE: tuple[tuple[str, float], ...] = (
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12),
    ("NVIDIA H100", 989e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100", 312e12),
)


def training_flops_per_token(config: TransformerConfig, seq_len: int) -> float:
    """Forward + backward matmul FLOPs per trained token (6 x matmul params, plus causal
    attention scores and values); the input-embedding gather costs nothing."""
    d, hd = config.d_model, config.head_dim
    attn_proj = d * hd * (2 * config.num_heads + 2 * config.num_kv_heads)
    mlp = 3 * d * config.mlp_dim  # gated MLP: gate, up, down
    matmul_params = config.num_layers * (attn_proj + mlp) + d * config.vocab_size
    causal_attention = config.num_layers * seq_len * config.num_heads * hd  # QK^T + AV, halved
    return 6.0 * (matmul_params + causal_attention)


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """Vendor peak for the device kind, or None when unknown (e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for prefix, peak in PEAK_FLOPS_PER_DEVICE:
        if kind.startswith(prefix):
            return peak
    return None
