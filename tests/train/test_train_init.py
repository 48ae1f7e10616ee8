"""Trainer initialisation from a Hugging Face directory and from a liquid_jax checkpoint."""

import jax
import numpy as np
import pytest
from flax import nnx

from helpers import sample_models as samples
from liquid_jax.convert import hf as hf_convert
from liquid_jax.model.config import TransformerConfig, model_config_dict
from liquid_jax.sharding import make_mesh
from liquid_jax.checkpoint import train_state
from liquid_jax.train import init_model
from liquid_jax.train import config as config_lib


def run_config(init_kind, path, **model_changes):
    model = model_config_dict(
        "gemma", text_vocab_size=samples.TEXT_VOCAB, num_image_codes=samples.IMAGE_CODES,
        d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128,
        max_position_embeddings=256, vocab_pad_multiple=32,
    )
    config = config_lib.train_config(model)
    config.model.update(model_changes)
    config.init.kind, config.init.path = init_kind, path
    return config, TransformerConfig.from_dict(config.model.to_dict())


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    model = samples.tiny_hf_model("gemma")
    model.save_pretrained(directory)
    embed = model.model.embed_tokens.weight.detach().numpy()
    norm = model.model.norm.weight.detach().numpy()
    return str(directory), embed, norm


def host(parts):
    return jax.device_get(nnx.to_pure_dict(parts.params))


def test_hf_init_extends_the_vocabulary_with_mean_rows(hf_dir):
    path, embed, norm = hf_dir
    config, model = run_config("hf", path)
    mesh = make_mesh((1, 2, 2), jax.devices()[:4])
    parts = init_model.initial_params(config, model, mesh)
    params = host(parts)
    table = params["embed"]["embedding"]
    assert table.shape == (model.padded_vocab_size, 64)
    np.testing.assert_array_equal(table[: samples.TEXT_VOCAB], embed)
    new_rows = table[samples.TEXT_VOCAB : model.vocab_size]
    np.testing.assert_allclose(new_rows, np.broadcast_to(embed.mean(0), new_rows.shape), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(params["final_norm"]["scale"], norm)
    leaf = jax.tree.leaves(parts.params)[0]
    assert leaf.sharding.mesh.shape == mesh.shape


def test_checkpoint_init_equals_hf_init_and_refuses_other_models(hf_dir, tmp_path):
    path, _, _ = hf_dir
    out = str(tmp_path / "liquid")
    hf_convert.convert_hf_to_liquid(
        path, out, extend_image_codes=samples.IMAGE_CODES, vocab_pad_multiple=32, progress=False
    )
    mesh = make_mesh((2, 1, 1), jax.devices()[:2])
    from_hf = host(init_model.initial_params(*run_config("hf", path), mesh))
    from_checkpoint = host(init_model.initial_params(*run_config("checkpoint", out), mesh))
    for a, b in zip(jax.tree.leaves(from_hf), jax.tree.leaves(from_checkpoint)):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(train_state.IncompatibleCheckpointError, match="num_layers: 2 .* vs 3"):
        init_model.initial_params(*run_config("checkpoint", out, num_layers=3), mesh)
