"""Rematerialisation: the activations a decoder layer names, and the policies that choose
which of them the backward pass keeps instead of recomputing.

A policy changes only how the forward pass is traced, never the parameters or the
checkpoint layout.

* ``none``: no remat (keep everything); ``full``: keep only each layer's input.
* ``dots`` / ``dots_no_batch``: keep every matmul output / those without batch dims
  (the projections, not attention's score and value products).
* ``save_qkv_proj``: keep the q, k, v projections; recompute attention, its output
  projection and the MLP.
* ``minimal``: keep the projections, the attention output and the MLP's matmul outputs,
  and what an attention kernel's forward returns (its output and the softmax statistics
  its backward reads); recompute norms, RoPE, activations and, with XLA attention, the
  scores. ``minimal_offloaded``: the same, the named activations kept in the host's
  memory (TPU) instead of HBM.
"""

from __future__ import annotations

import jax

QUERY, KEY, VALUE = "query_proj", "key_proj", "value_proj"
CONTEXT = "context"  # the attention output
OUT_PROJ, MLP_GATE, MLP_UP, MLP_OUT = "out_proj", "mlp_gate", "mlp_up", "mlp_out"
PROJECTIONS = (QUERY, KEY, VALUE)
MINIMAL = PROJECTIONS + (CONTEXT, OUT_PROJ, MLP_GATE, MLP_UP, MLP_OUT)



def _and_kernels(policy):
    """``policy``, and keep every attention-kernel (``pallas_call``) output: a kernel's
    forward runs inside its custom VJP, where activation names do not reach."""

    def keep(primitive, *args, **params):
        return primitive.name == "pallas_call" or policy(primitive, *args, **params)

    return keep


POLICIES = {
    "full": None,  # save nothing: recompute the whole layer
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_qkv_proj": jax.checkpoint_policies.save_only_these_names(*PROJECTIONS),
    "minimal": _and_kernels(jax.checkpoint_policies.save_only_these_names(*MINIMAL)),
    "minimal_offloaded": _and_kernels(jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[], names_which_can_be_offloaded=list(MINIMAL),
        offload_src="device", offload_dst="pinned_host",
    )),
}
NAMES = ("none",) + tuple(POLICIES)
