"""Vocabulary extension by image codes and vocabulary padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers.hf_dirs import hf_logits, random_tokens, tiny_hf_model, write_hf_dir
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.extend import extend_vocab, set_vocab_padding
from liquid_jax.sharding import make_mesh


def _config(tie: bool, **kw) -> TransformerConfig:
    return TransformerConfig(family="gemma" if tie else "llama", vocab_size=50, d_model=8,
                             num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4, mlp_dim=16,
                             tie_embeddings=tie, **kw)


def _params(config: TransformerConfig, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    table = lambda: np.concatenate([  # noqa: E731
        rng.standard_normal((config.vocab_size, config.d_model)).astype(np.float32),
        np.zeros((config.padded_vocab_size - config.vocab_size, config.d_model), np.float32),
    ])
    params = {"embed": {"embedding": table()}, "final_norm": {"scale": np.ones(8, np.float32)}}
    if not config.tie_embeddings:
        params["lm_head"] = {"weight": table()}
    return params


@pytest.mark.parametrize("tie", [True, False])
def test_new_rows_are_the_mean_of_real_rows(tie):
    config = _config(tie, vocab_pad_multiple=16)  # 50 real rows + 14 zero padding rows
    params = _params(config)
    new_config, new = extend_vocab(config, params, num_codes=20)
    assert (new_config.vocab_size, new_config.num_image_codes, new_config.text_vocab_size) == (70, 20, 50)
    assert new_config.padded_vocab_size == 80
    tables = [("embed", "embedding")] + ([] if tie else [("lm_head", "weight")])
    for outer, inner in tables:
        old, ext = params[outer][inner], new[outer][inner]
        assert ext.shape == (80, 8) and ext.dtype == np.float32
        np.testing.assert_array_equal(ext[:50], old[:50])
        mean = old[:50].astype(np.float64).mean(axis=0)  # padding rows must not count
        np.testing.assert_allclose(ext[50:70], np.broadcast_to(mean, (20, 8)), rtol=1e-6, atol=1e-7)
        assert not ext[70:].any()
    assert ("lm_head" in new) == (not tie)
    assert new["final_norm"] is params["final_norm"]  # untouched parameters are shared


def test_untied_tables_get_their_own_means():
    config = _config(False)
    params = _params(config)
    _, new = extend_vocab(config, params, num_codes=3)
    assert not np.allclose(new["embed"]["embedding"][50], new["lm_head"]["weight"][50])


def test_sharded_bfloat16_tables_stay_sharded():
    config = _config(True, vocab_pad_multiple=8)
    mesh = make_mesh((2, 2, 2))
    sharding = NamedSharding(mesh, P("tensor", "fsdp"))
    params = jax.tree.map(lambda x: jax.device_put(jnp.asarray(x, jnp.bfloat16), sharding),
                          {"embed": _params(config)["embed"]})
    new_config, new = extend_vocab(config, params, num_codes=6)
    table = new["embed"]["embedding"]
    assert table.dtype == jnp.bfloat16 and table.sharding == sharding
    assert table.shape == (new_config.padded_vocab_size, 8) == (56, 8)
    real = np.asarray(params["embed"]["embedding"][:50], np.float32)
    want = real.mean(axis=0).astype(jnp.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(table[50:56], np.float32), np.broadcast_to(want, (6, 8)))


def test_errors():
    config = _config(True)
    extended, params = extend_vocab(config, _params(config), 4)
    with pytest.raises(ValueError, match="already has 4 image codes"):
        extend_vocab(extended, params, 4)
    with pytest.raises(ValueError, match="positive"):
        extend_vocab(config, _params(config), 0)
    with pytest.raises(ValueError, match="padded_vocab_size 64"):
        extend_vocab(config.replace(vocab_pad_multiple=64), _params(config), 4)
    with pytest.raises(KeyError, match="lm_head/weight"):
        extend_vocab(_config(False), {"embed": _params(config)["embed"]}, 4)


def test_set_vocab_padding_round_trip():
    config = _config(False)
    params = _params(config)
    padded_config, padded = set_vocab_padding(config, params, 128)
    assert padded["lm_head"]["weight"].shape == (128, 8)
    assert not padded["lm_head"]["weight"][50:].any()
    back_config, back = set_vocab_padding(padded_config, padded, 1)
    assert back_config == config
    np.testing.assert_array_equal(back["embed"]["embedding"], params["embed"]["embedding"])


def test_extended_gemma_keeps_text_logits(tmp_path):
    """Liquid's recipe on a tiny Gemma: 8192 mean rows; text logits as transformers'."""
    import liquid_jax

    model = tiny_hf_model("gemma", 512)
    src = write_hf_dir(tmp_path / "hf", model)
    lm = liquid_jax.load(src, progress=False)  # extends by 8192 by default
    assert (lm.config.vocab_size, lm.config.num_image_codes) == (512 + 8192, 8192)
    table = np.asarray(lm.model.embed.embedding.get_value())
    original = model.model.embed_tokens.weight.detach().numpy()
    np.testing.assert_array_equal(table[:512], original)
    np.testing.assert_allclose(table[512:], np.broadcast_to(original.mean(0), (8192, 32)), rtol=1e-5, atol=1e-7)

    tokens = random_tokens(512)
    logits = np.asarray(lm.logits(tokens))
    assert logits.shape == (2, 12, 512 + 8192)
    want = hf_logits(model, tokens)
    np.testing.assert_allclose(logits[..., :512], want, rtol=1e-4, atol=1e-4)
    # Tied head: every image code scores the mean embedding.
    np.testing.assert_allclose(logits[..., 512:], np.broadcast_to(logits[..., 512:513], logits[..., 512:].shape),
                               rtol=1e-6, atol=1e-6)
    print(f"max |logit - transformers| = {np.abs(logits[..., :512] - want).max():.2e}")
