"""liquid_jax.directory.directory: Orbax params + JSON card, atomic writes, sharded restore."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from liquid_jax.checkpoint import card, directory
from liquid_jax.sharding import logical_param, make_mesh, state_shardings


def _tree(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "embed": {"embedding": rng.standard_normal((16, 8)).astype(np.float32)},
        "layers": {"w": rng.standard_normal((2, 8, 8)).astype(np.float32)},
        "count": np.arange(3, dtype=np.int32),
    }


def test_round_trip_numpy(tmp_path):
    tree = _tree()
    directory.save_params(tmp_path / "ck", tree, {"kind": "transformer", "config": {"a": 1}})
    params, meta = directory.load_params(tmp_path / "ck")
    assert meta == {"kind": "transformer", "config": {"a": 1}, "format_version": card.FORMAT_VERSION}
    assert json.loads((tmp_path / "ck" / "liquid_jax.json").read_text())["kind"] == "transformer"
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(tree)):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary left


class _Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embedding = logical_param(jax.random.normal(rngs.params(), (16, 8)), ("vocab", "embed"))
        self.kernel = logical_param(jax.random.normal(rngs.params(), (8, 32)), ("embed", "mlp"))


def test_nnx_state_sharded_restore_and_cast(tmp_path):
    model = _Tiny(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    directory.save_params(tmp_path / "ck", state, {"kind": "test"})

    mesh = make_mesh((2, 2, 2))
    abstract = nnx.state(nnx.eval_shape(lambda: _Tiny(nnx.Rngs(0))), nnx.Param)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), abstract)
    params, _ = directory.load_params(
        tmp_path / "ck", abstract=abstract, shardings=state_shardings(abstract, mesh)
    )
    emb = params["embedding"]
    assert emb.dtype == jnp.bfloat16
    assert emb.sharding.spec == P("tensor", "fsdp")
    assert len(emb.addressable_shards) == 8 and emb.addressable_shards[0].data.shape == (8, 4)
    np.testing.assert_array_equal(
        np.asarray(emb, np.float32), np.asarray(model.embedding.get_value().astype(jnp.bfloat16), np.float32)
    )
    nnx.update(model, params)  # the restored dict fits the module
    assert model.kernel.get_value().dtype == jnp.bfloat16


def test_shardings_only_uses_stored_shapes(tmp_path):
    tree = _tree()
    directory.save_params(tmp_path / "ck", tree, {"kind": "test"})
    mesh = make_mesh((8, 1, 1))
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)
    shardings["embed"]["embedding"] = NamedSharding(mesh, P("data"))
    params, _ = directory.load_params(tmp_path / "ck", shardings=shardings)
    assert params["embed"]["embedding"].sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(params["layers"]["w"]), tree["layers"]["w"])


def test_existing_destination_and_overwrite(tmp_path):
    directory.save_params(tmp_path / "ck", _tree(0), {"kind": "test"})
    with pytest.raises(FileExistsError, match="ck.*already exists"):
        directory.save_params(tmp_path / "ck", _tree(1), {"kind": "test"})
    directory.save_params(tmp_path / "ck", _tree(1), {"kind": "test", "v": 2}, overwrite=True)
    params, meta = directory.load_params(tmp_path / "ck")
    assert meta["v"] == 2
    np.testing.assert_array_equal(params["count"], _tree(1)["count"])


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        directory.save_params(tmp_path / "ck", _tree(), {"kind": "test", "bad": object()})
    bad_tree = {"w": np.zeros(3), "not_an_array": object()}
    with pytest.raises(Exception):
        directory.save_params(tmp_path / "ck", bad_tree, {"kind": "test"})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="kind"):
        directory.save_params(tmp_path / "ck", _tree(), {"config": {}})


def test_mismatched_abstract_names_the_tensor(tmp_path):
    tree = _tree()
    directory.save_params(tmp_path / "ck", tree, {"kind": "test"})
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    abstract["layers"]["w"] = jax.ShapeDtypeStruct((3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"layers/w.*\(2, 8, 8\).*\(3, 8, 8\)"):
        directory.load_params(tmp_path / "ck", abstract=abstract)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    abstract["extra"] = jax.ShapeDtypeStruct((1,), np.float32)
    with pytest.raises(KeyError, match="extra"):
        directory.load_params(tmp_path / "ck", abstract=abstract)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="liquid_jax.json"):
        card.read_metadata(tmp_path)


def test_extra_files_are_part_of_the_atomic_write(tmp_path):
    vocab = tmp_path / "tokenizer.json"
    vocab.write_text('{"model": {}}')
    directory.save_params(tmp_path / "ck", _tree(), {"kind": "test"},
                           extra_files={"tokenizer/tokenizer.json": vocab}, max_inflight_gb=0.01)
    assert (tmp_path / "ck" / "tokenizer" / "tokenizer.json").read_text() == '{"model": {}}'
    with pytest.raises(FileNotFoundError):
        directory.save_params(tmp_path / "ck2", _tree(), {"kind": "test"},
                               extra_files={"missing.model": tmp_path / "missing.model"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "tokenizer.json"]


def test_streaming_save_writes_one_orbax_checkpoint(tmp_path):
    tree = _tree()
    parts = [{"layers": {"w": tree["layers"]["w"]}}, {"embed": tree["embed"]}, {"count": tree["count"]}]
    directory.save_params_streaming(tmp_path / "ck", iter(parts), {"kind": "test"})
    assert (tmp_path / "ck" / directory.PARAMS_DIR / directory.PYTREE_DIR / "_METADATA").is_file()
    params, _ = directory.load_params(tmp_path / "ck")
    assert jax.tree.structure(params) == jax.tree.structure(tree)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(got, want)
    w = directory.load_param(tmp_path / "ck", ("layers", "w"))
    assert isinstance(w, np.ndarray) and w.dtype == np.float32
    np.testing.assert_array_equal(w, tree["layers"]["w"])
    with pytest.raises(KeyError, match="layers/missing"):
        directory.load_param(tmp_path / "ck", ("layers", "missing"))


def test_failed_streaming_save_leaves_nothing(tmp_path):
    def parts():
        yield {"a": np.ones(4, np.float32)}
        raise ValueError("tensor 'b' is corrupt")

    with pytest.raises(ValueError, match="tensor 'b'"):
        directory.save_params_streaming(tmp_path / "ck", parts(), {"kind": "test"})
    with pytest.raises(Exception):  # the same leaf twice
        directory.save_params_streaming(
            tmp_path / "ck", [{"a": np.ones(2)}, {"a": np.zeros(2)}], {"kind": "test"})
    with pytest.raises(ValueError, match="no parameters"):
        directory.save_params_streaming(tmp_path / "ck", [], {"kind": "test"})
    assert list(tmp_path.iterdir()) == []
