"""Trees as our files store them: nnx Variables unwrapped to their arrays (and put back
on restore), mappings as plain dicts."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
from flax import nnx


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def unwrap(tree: Any) -> Any:
    """``tree`` with every nnx.Variable replaced by its value, containers kept: what is
    stored (no Flax types on disk)."""
    return jax.tree.map(lambda v: v.get_value() if _is_variable(v) else v, tree, is_leaf=_is_variable)


def rewrap(template: Any, values: Any) -> Any:
    """``values`` (shaped like ``unwrap(template)``) put back into the Variables of ``template``."""
    return jax.tree.map(
        lambda t, v: t.replace(v) if _is_variable(t) else v, template, values, is_leaf=_is_variable
    )


def as_dicts(tree: Any) -> Any:
    """Mappings (an nnx.State too) as plain nested dicts."""
    return {k: as_dicts(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def pure_dicts(tree: Any) -> Any:
    """An nnx.State (or nested mapping holding nnx.Variables) as plain nested dicts of values."""
    return as_dicts(unwrap(tree))


def nested(path: Sequence[str], leaf: Any) -> Any:
    """``leaf`` inside nested dicts keyed by ``path`` (e.g. {"embed": {"embedding": leaf}})."""
    for key in reversed(path):
        leaf = {key: leaf}
    return leaf
