"""Train-state checkpoints: asynchronous Orbax saves of everything a resume needs.

``<workdir>/checkpoints/<step>/`` holds four items:

* ``params``     -- model parameters (Orbax PyTree, sharded writes);
* ``opt_state``  -- optimizer state;
* ``data``       -- the input iterator state of every process (one JSON file each);
* ``config``     -- the run's full config as JSON (the model part is checked on resume).

``<step>`` is the number of completed optimizer steps. The last ``keep`` checkpoints
are kept.
"""

from __future__ import annotations

import json
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

CHECKPOINT_DIR = "checkpoints"
# Model fields that change how the step is computed but not what is stored.
NUMERICS_FIELDS = ("dtype", "remat", "scan_layers")


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint of a different model."""


class _JsonStateIterator:
    """Presents an iterator with a JSON-able ``get_state()`` to Grain's Orbax handler,
    which writes one file per process."""

    def __init__(self, iterator: Any):
        self._iterator = iterator

    def get_state(self) -> bytes:
        return json.dumps(self._iterator.get_state()).encode()

    def set_state(self, state: bytes) -> None:
        self._iterator.set_state(json.loads(state.decode()))

    def start_prefetch(self) -> None:
        pass


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _unwrap(tree: Any) -> Any:
    """Variables replaced by their values: what is stored (no Flax types on disk)."""
    return jax.tree.map(lambda v: v.get_value() if _is_variable(v) else v, tree, is_leaf=_is_variable)


def _rewrap(template: Any, values: Any) -> Any:
    """``values`` put back into the Variables of ``template``."""
    return jax.tree.map(
        lambda t, v: t.replace(v) if _is_variable(t) else v, template, values, is_leaf=_is_variable
    )


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        _unwrap(tree),
    )


def model_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable ``field: saved -> current`` lines for layout-relevant fields."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        if key in NUMERICS_FIELDS:
            continue
        if saved.get(key) != current.get(key):
            lines.append(f"{key}: {saved.get(key)!r} (checkpoint) vs {current.get(key)!r} (config)")
    return lines


class TrainCheckpointer:
    """Save/restore of (params, opt_state, data iterator, config) under ``workdir``."""

    def __init__(
        self,
        workdir: str | epath.PathLike,
        *,
        save_every: int,
        keep: int,
        use_async: bool = True,
    ):
        self.directory = epath.Path(workdir) / CHECKPOINT_DIR
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=max(save_every, 1),
            enable_async_checkpointing=use_async,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def saved_config(self, step: int) -> dict[str, Any]:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )
        return restored["config"]

    def check_model(self, step: int, model_config: dict[str, Any]) -> None:
        """Raises IncompatibleCheckpointError if checkpoint ``step`` is of another model."""
        saved = self.saved_config(step).get("model", {})
        diff = model_differences(saved, model_config)
        if diff:
            raise IncompatibleCheckpointError(
                f"{self.directory} holds a checkpoint (step {step}) of a different model; "
                "refusing to resume from it. Differences:\n  " + "\n  ".join(diff)
                + "\nUse a new --workdir, or the config the checkpoint was written with."
            )

    def save(
        self,
        step: int,
        params: Any,
        opt_state: Any,
        data_iterator: Any,
        config: dict[str, Any],
        force: bool = False,
    ) -> bool:
        """Starts an asynchronous save if ``step`` is due (or ``force``); True if started."""
        items = {
            "params": ocp.args.StandardSave(_unwrap(params)),
            "opt_state": ocp.args.StandardSave(_unwrap(opt_state)),
            "config": ocp.args.JsonSave(config),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(_JsonStateIterator(data_iterator))
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(
        self,
        step: int,
        params: Any,
        opt_state: Any,
        data_iterator: Any,
    ) -> tuple[Any, Any]:
        """Restores into the shapes/shardings (and Variable wrappers) of ``params`` /
        ``opt_state`` (arrays or ShapeDtypeStructs); the data iterator is restored in place."""
        items = {
            "params": ocp.args.StandardRestore(_abstract(params)),
            "opt_state": ocp.args.StandardRestore(_abstract(opt_state)),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(_JsonStateIterator(data_iterator))
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return _rewrap(params, restored["params"]), _rewrap(opt_state, restored["opt_state"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
