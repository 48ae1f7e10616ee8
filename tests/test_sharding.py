"""The mesh and the logical-axis table: specs, mesh shapes and the batch split, checked
against hand-worked cases on the 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from liquid_jax.sharding import (
    LOGICAL_RULES, MESH_AXES, batch_shard_count, constrain, logical_param, logical_to_spec, make_mesh,
    mesh_shape, state_shardings,
)


def test_specs_follow_the_table_and_use_a_mesh_axis_once():
    assert logical_to_spec(("batch", "activation_length", "activation_embed")) == P(("data", "fsdp"), None, None)
    assert logical_to_spec(("embed", "mlp")) == P("fsdp", "tensor")
    # "mlp" and "vocab" both map to tensor: the second dimension that asks for it is replicated.
    assert logical_to_spec(("mlp", "vocab")) == P("tensor", None)
    assert logical_to_spec(None) == P()
    with pytest.raises(KeyError, match="no_such_axis"):
        logical_to_spec(("no_such_axis",))


def test_specs_drop_mesh_axes_of_size_one_and_axes_that_do_not_divide():
    mesh = make_mesh((2, 1, 4))
    assert logical_to_spec(("batch", "embed"), mesh=mesh) == P("data", None)
    # 14 query heads over a tensor axis of 4: replicated; 8 heads: split.
    assert logical_to_spec(("embed", "q_heads", "head_dim"), mesh=mesh, shape=(64, 14, 16)) == P(None, None, None)
    assert logical_to_spec(("embed", "q_heads", "head_dim"), mesh=mesh, shape=(64, 8, 16)) == P(None, "tensor", None)
    # batch over (data, fsdp) = (2, 4) on a (2, 4, 1) mesh: 6 rows divide by 2 but not by 8.
    mesh = make_mesh((2, 4, 1))
    assert logical_to_spec(("batch",), mesh=mesh, shape=(6,)) == P("data")
    assert logical_to_spec(("batch",), mesh=mesh, shape=(16,)) == P(("data", "fsdp"))


@pytest.mark.parametrize("shape, expected", [
    ((-1, 1, 1), [8, 1, 1]), ((2, -1, 2), [2, 2, 2]), ({"tensor": 4, "data": -1}, [2, 1, 4]), ((1, 8, 1), [1, 8, 1]),
])
def test_mesh_shape_resolves_the_rest(shape, expected):
    assert mesh_shape(shape, 8) == expected


@pytest.mark.parametrize("shape, message", [
    ((3, -1, 1), "does not divide"), ((2, 2, 1), "needs 4 devices"), ((-1, -1, 1), "at most one"),
    ((8, 1), "must have 3 entries"), ({"model": 8}, "unknown mesh axes"),
])
def test_mesh_shape_refuses_what_cannot_be_built(shape, message):
    with pytest.raises(ValueError, match=message):
        mesh_shape(shape, 8)


def test_make_mesh_uses_every_device_with_the_projects_axis_names():
    mesh = make_mesh({"fsdp": 2, "data": -1})
    assert mesh.axis_names == MESH_AXES
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())


@pytest.mark.parametrize("shape, count", [((-1, 1, 1), 8), ((2, 2, 2), 4), ((1, 1, 8), 1), ((1, 4, 2), 4)])
def test_batch_shard_count_is_the_product_of_the_batch_axes(shape, count):
    assert batch_shard_count(make_mesh(shape)) == count
    assert batch_shard_count(None) == 1


def test_state_shardings_read_each_parameters_logical_axes():
    class Layer(nnx.Module):
        def __init__(self):
            self.w = logical_param(jnp.zeros((16, 32)), ("embed", "mlp"))
            self.b = logical_param(jnp.zeros((32,)), ("mlp",))

    mesh = make_mesh((1, 2, 4))
    shardings = state_shardings(nnx.state(Layer()), mesh)
    assert shardings["w"].spec == P("fsdp", "tensor")
    assert shardings["b"].spec == P("tensor")
    with pytest.raises(ValueError, match="do not match"):
        logical_param(jnp.zeros((4, 4)), ("embed",))


def test_constrain_is_a_no_op_outside_a_mesh_and_shards_inside():
    x = jnp.arange(32.0).reshape(8, 4)
    np.testing.assert_array_equal(jax.jit(lambda a: constrain(a, ("batch", None)))(x), x)
    mesh = make_mesh((-1, 1, 1))
    with jax.set_mesh(mesh):
        y = jax.jit(lambda a: constrain(a * 2, ("batch", None)))(x)
    np.testing.assert_array_equal(y, x * 2)
    assert y.sharding.spec[0] == "data" and len(y.addressable_shards) == 8
    assert len(dict(LOGICAL_RULES)) == len(LOGICAL_RULES)  # one rule per logical name
