"""Logit parity of the decoder against Hugging Face transformers (eager, float32).

Each family is a tiny random transformers model; its state dict goes through
``params_from_hf`` and both models run the same tokens. Weights are re-drawn with a
larger scale than transformers' init so soft-capping, norms and rotary scaling matter.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P

from liquid_jax.convert import hf_mapping
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.transformer import Transformer, from_params
from liquid_jax.sharding import make_mesh

COMMON = dict(
    vocab_size=300, hidden_size=64, intermediate_size=128, num_attention_heads=4,
    head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-6,
)
HF_CONFIGS = {
    # Multi-query attention (kv=1), tied head, embeddings scaled by sqrt(d_model).
    "gemma": transformers.GemmaConfig(**COMMON, num_hidden_layers=2, num_key_value_heads=1),
    # Window 16 < 64 tokens; both soft-caps small enough to be far from linear.
    "gemma2": transformers.Gemma2Config(
        **COMMON, num_hidden_layers=4, num_key_value_heads=2, sliding_window=16,
        query_pre_attn_scalar=24, attn_logit_softcapping=3.0, final_logit_softcapping=2.5,
    ),
    # GQA 4/2, untied head, llama3 rotary scaling with a short original context.
    "llama": transformers.LlamaConfig(
        **COMMON, num_hidden_layers=3, num_key_value_heads=2, tie_word_embeddings=False,
        rope_theta=10_000.0,
        rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=32,
        ),
    ),
    # q/k/v biases, tied head, theta 1e6.
    "qwen2": transformers.Qwen2Config(
        **COMMON, num_hidden_layers=2, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=1_000_000.0,
    ),
}
FAMILIES = sorted(HF_CONFIGS)
MODEL_CLASSES = {
    "gemma": transformers.GemmaForCausalLM,
    "gemma2": transformers.Gemma2ForCausalLM,
    "llama": transformers.LlamaForCausalLM,
    "qwen2": transformers.Qwen2ForCausalLM,
}
VOCAB, BATCH, LENGTH = 300, 2, 64


@functools.cache
def reference(family: str):
    """(transformers model, our config, our model) sharing random weights."""
    torch.manual_seed(0)
    hf_config = HF_CONFIGS[family]
    hf_config._attn_implementation = "eager"
    hf_model = MODEL_CLASSES[family](hf_config).eval()
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "norm" in name else 0.1))
    # Pad the vocabulary to 384 rows to exercise the padded-row masking.
    config = hf_mapping.config_from_hf(hf_config.to_dict(), vocab_pad_multiple=128)
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    model = from_params(config, hf_mapping.params_from_hf(config, state.__getitem__))
    return hf_model, config, model


@nnx.jit
def run(model, tokens, positions=None, segment_ids=None):
    return model(tokens, positions, segment_ids)[0]


def hf_logits(hf_model, tokens, attention_mask=None, position_ids=None) -> np.ndarray:
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.as_tensor(np.asarray(tokens), dtype=torch.long),
            attention_mask=None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask)),
            position_ids=None if position_ids is None else torch.as_tensor(np.asarray(position_ids)),
        )
    return out.logits.float().numpy()


def assert_close(ours, theirs, what):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    scale = np.abs(theirs).max()
    err = np.abs(ours - theirs).max()
    assert err <= 1e-4 * scale, f"{what}: max|diff| {err:.3g} > 1e-4 * max|logits| {scale:.3g}"


def random_tokens(seed, shape):
    return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family):
    hf_model, config, model = reference(family)
    tokens = random_tokens(1, (BATCH, LENGTH))
    expected = hf_logits(hf_model, tokens)
    logits = run(model, jnp.asarray(tokens))
    assert logits.dtype == jnp.float32 and logits.shape == (BATCH, LENGTH, config.padded_vocab_size)
    assert_close(logits[..., :VOCAB], expected, family)
    assert np.all(np.asarray(logits[..., VOCAB:]) < -1e30), "padded vocabulary rows must be masked"
    if config.final_logit_softcap:
        assert np.abs(expected).max() > 0.8 * config.final_logit_softcap, "soft-cap not exercised"
    # project() over a vocabulary slice equals the same columns of the full logits.
    sliced = nnx.jit(lambda m, t: m.project(m.hidden_states(t)[0], 100, 200))(model, jnp.asarray(tokens))
    np.testing.assert_allclose(sliced, logits[..., 100:200], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_matches_transformers(family):
    hf_model, _, model = reference(family)
    tokens = random_tokens(2, (BATCH, LENGTH))
    pads = [11, 0]
    mask = np.ones((BATCH, LENGTH), np.int32)
    for row, n in enumerate(pads):
        mask[row, :n] = 0
        tokens[row, :n] = 0
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    expected = hf_logits(hf_model, tokens, mask, positions)
    logits = run(model, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    for row, n in enumerate(pads):
        assert_close(logits[row, n:, :VOCAB], expected[row, n:], f"{family} row {row}")


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_segments_match_separate_sequences(family):
    hf_model, _, model = reference(family)
    lengths = [21, 30, 9]  # and 4 padding slots at the end
    tokens = random_tokens(3, (1, LENGTH))
    segment_ids = np.zeros((1, LENGTH), np.int32)
    positions = np.zeros((1, LENGTH), np.int32)
    start = 0
    for seg, n in enumerate(lengths, start=1):
        segment_ids[0, start:start + n] = seg
        positions[0, start:start + n] = np.arange(n)
        start += n
    logits = run(model, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segment_ids))
    assert np.all(np.isfinite(np.asarray(logits)))
    start = 0
    for n in lengths:
        expected = hf_logits(hf_model, tokens[:, start:start + n])
        assert_close(logits[:, start:start + n, :VOCAB], expected, f"{family} segment at {start}")
        start += n


@pytest.mark.parametrize("family", FAMILIES)
def test_export_reproduces_saved_checkpoint(family, tmp_path):
    hf_model, config, model = reference(family)
    hf_model.save_pretrained(tmp_path)
    saved = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    exported = dict(hf_mapping.params_to_hf(config, nnx.to_pure_dict(nnx.state(model))))
    assert sorted(exported) == sorted(saved)
    for name, tensor in saved.items():
        assert exported[name].shape == tensor.shape, name
        np.testing.assert_array_equal(exported[name], tensor, err_msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_round_trip_through_transformers(family):
    _, config, _ = reference(family)
    hf_dict = hf_mapping.config_to_hf(config)
    assert hf_dict["vocab_size"] == config.vocab_size == VOCAB
    loaded = transformers.AutoConfig.for_model(**hf_dict)
    assert type(loaded) is type(HF_CONFIGS[family])
    assert hf_mapping.config_from_hf(loaded.to_dict(), vocab_pad_multiple=128) == config
    reference_dict = HF_CONFIGS[family].to_dict()
    for key in ("hidden_size", "num_key_value_heads", "head_dim", "tie_word_embeddings",
                "rope_parameters", "sliding_window", "final_logit_softcapping",
                "attn_logit_softcapping", "query_pre_attn_scalar", "layer_types"):
        if key in reference_dict:
            assert loaded.to_dict()[key] == reference_dict[key], key


def layout(state):
    return jax.tree.map(lambda v: (v.shape, v.get_metadata()["logical_axes"]), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def mean_logit_and_logits(config, params, tokens):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))
    nnx.replace_by_pure_dict(state, params)
    logits = nnx.merge(graphdef, state)(tokens)[0][..., :VOCAB]
    return logits.mean(), logits


forward = jax.jit(lambda c, p, t: mean_logit_and_logits(c, p, t)[1], static_argnums=0)
gradient = jax.jit(lambda c, p, t: jax.grad(mean_logit_and_logits, 1, has_aux=True)(c, p, t)[0],
                   static_argnums=0)


def test_scan_and_remat_keep_logits_and_parameter_layout():
    _, config, model = reference("gemma2")
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(nnx.state(model)))
    tokens = jnp.asarray(random_tokens(4, (BATCH, 40)))
    base_layout = layout(nnx.state(Transformer(config, rngs=nnx.Rngs(0))))
    base_logits = forward(config, params, tokens)
    for scan, remat in [(True, "none"), (False, "full"), (True, "dots_no_batch")]:
        variant = config.replace(scan_layers=scan, remat=remat)
        assert layout(nnx.state(Transformer(variant, rngs=nnx.Rngs(0)))) == base_layout
        np.testing.assert_allclose(forward(variant, params, tokens), base_logits, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{scan=} {remat=}")


@pytest.mark.slow
def test_scan_and_remat_keep_gradients():
    _, config, model = reference("gemma2")
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(nnx.state(model)))
    tokens = jnp.asarray(random_tokens(4, (BATCH, 40)))
    base = gradient(config, params, tokens)
    for scan, remat in [(True, "full"), (False, "dots")]:
        grads = gradient(config.replace(scan_layers=scan, remat=remat), params, tokens)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads, base)


def test_bfloat16_compute_tracks_float32():
    _, config, model = reference("gemma2")
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(nnx.state(model)))
    tokens = jnp.asarray(random_tokens(5, (BATCH, 32)))
    expected = forward(config, params, tokens)
    bf16 = config.replace(dtype="bfloat16", scan_layers=True)
    logits = forward(bf16, params, tokens)
    h, _ = nnx.jit(lambda m, t: m.hidden_states(t))(from_params(bf16, params), tokens)
    assert logits.dtype == jnp.float32 and h.dtype == jnp.bfloat16
    assert np.abs(np.asarray(logits - expected)).max() < 0.1 * np.abs(np.asarray(expected)).max()


def test_mapping_errors_name_the_problem():
    _, config, model = reference("llama")
    state = {k: v.numpy() for k, v in reference("llama")[0].state_dict().items()}
    missing = dict(state)
    del missing["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        hf_mapping.params_from_hf(config, missing.__getitem__)
    wrong = dict(state, **{"model.layers.0.self_attn.k_proj.weight": np.zeros((16, 64), np.float32)})
    with pytest.raises(ValueError, match=r"k_proj\.weight.*\(32, 64\).*\(16, 64\)"):
        hf_mapping.params_from_hf(config, wrong.__getitem__)
    with pytest.raises(ValueError, match="mistral"):
        hf_mapping.config_from_hf({"model_type": "mistral", "architectures": ["MistralForCausalLM"]})
    params = nnx.to_pure_dict(nnx.state(model))
    del params["lm_head"]
    with pytest.raises(ValueError, match="lm_head"):
        from_params(config, params)


def test_config_from_hf_reads_released_checkpoint_fields():
    """A config.json in the transformers-4 style of the released Liquid_V1_7B."""
    liquid = {
        "architectures": ["GemmaForCausalLM"], "model_type": "gemma", "vocab_size": 264192,
        "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256,
        "hidden_act": "gelu", "hidden_activation": None, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 8192, "bos_token_id": 2,
        "eos_token_id": 1, "pad_token_id": 0, "attention_bias": False,
    }
    config = hf_mapping.config_from_hf(liquid, num_image_codes=8192)
    assert (config.text_vocab_size, config.tie_embeddings, config.activation) == (256000, True, "gelu_tanh")
    assert config.special_tokens.boi == 7 and config.image_token(0) == 256000
    llama = {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "rope_theta": 500000.0, "tie_word_embeddings": True, "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    }
    config = hf_mapping.config_from_hf(llama)
    assert config.head_dim == 64 and config.rope_theta == 500000.0
    assert dict(config.rope_scaling)["factor"] == 32.0
    tokens = config.special_tokens
    assert (tokens.bos, tokens.eos, tokens.pad) == (128000, 128001, 128001)
    with pytest.raises(ValueError, match="use_sliding_window"):
        hf_mapping.config_from_hf({**llama, "model_type": "qwen2", "use_sliding_window": True})
    assert isinstance(config, TransformerConfig)


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_sharded_model_matches_single_device(family):
    """Parameters placed by their logical axes on a (data 2, fsdp 2, tensor 2) mesh; Gemma's
    single KV head is replicated rather than split."""
    _, config, model = reference(family)
    params = nnx.to_pure_dict(nnx.state(model))
    tokens = jnp.asarray(random_tokens(6, (4, 32)))
    expected = run(model, tokens)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with jax.set_mesh(mesh):
        sharded = from_params(config.replace(scan_layers=True), params, mesh)
        attn = sharded.layers.attn
        assert attn.q_proj.kernel[...].sharding.spec == P(None, "fsdp", "tensor", None)
        kv_split = "tensor" if config.num_kv_heads > 1 else None
        assert attn.k_proj.kernel[...].sharding.spec == P(None, "fsdp", kv_split, None)
        logits = run(sharded, tokens)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
