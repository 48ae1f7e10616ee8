"""Where a sampling batch lives: weights by the training rules, rows over the batch axes.

Without a mesh everything stays on the default device. With one, the row count is
padded (by repeating a group's last row) to a multiple of the data-parallel size; for
guided batches the conditional and unconditional halves are padded alike so they stay
aligned.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from liquid_jax.sharding import batch_shard_count, logical_to_spec, state_shardings


class BatchPlacement:
    """Pads, places and un-pads the rows of one generation request."""

    def __init__(self, mesh: Mesh | None, rows: int, guided: bool):
        self.mesh = mesh
        groups = 2 if guided else 1
        per_group = rows // groups
        self.spec = logical_to_spec(("batch",), mesh=mesh) if mesh is not None else None
        shards = batch_shard_count(mesh)
        padded = per_group
        while (groups * padded) % shards:
            padded += 1
        self.index = np.concatenate(
            [g * per_group + np.minimum(np.arange(padded), per_group - 1) for g in range(groups)]
        )
        self.keep = np.concatenate([g * padded + np.arange(per_group) for g in range(groups)])

    def params(self, params: nnx.State) -> Any:
        """Model state placed by the logical-axis rules (unchanged without a mesh)."""
        if self.mesh is None:
            return params
        return jax.device_put(params, state_shardings(params, self.mesh))

    def rows(self, array: np.ndarray) -> jax.Array:
        """A [rows, ...] host array padded and sharded over the batch axes."""
        array = np.asarray(array)[self.index]
        if self.mesh is None:
            return jax.numpy.asarray(array)
        return jax.device_put(array, NamedSharding(self.mesh, self.spec))

    def take(self, array: np.ndarray) -> np.ndarray:
        """The rows of a padded [rows, ...] result that belong to the request."""
        return array[self.keep]

    def context(self):
        """The mesh context that sharding constraints inside the model read."""
        return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
