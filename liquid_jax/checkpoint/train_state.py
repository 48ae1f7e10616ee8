"""Train-state checkpoints: asynchronous Orbax saves of everything a resume needs.

``<workdir>/checkpoints/<step>/`` holds these items:

* the state     -- one Orbax PyTree per entry of the trainer's state (sharded writes): the
                   LM trainer's ``params`` and ``opt_state``; the VQGAN trainer's
                   ``params``, ``opt_state`` and ``stats`` (``liquid_jax.train.vqgan``);
* ``data``      -- the input iterator state of every process (one JSON file each), if any;
* ``config``    -- the run's full config as JSON (the model part is checked on resume);
* ``card``      -- the model card (``liquid_jax.checkpoint.card``): what an export writes, if any.

``<workdir>`` is any path ``liquid_jax.paths`` reads (``gs://`` included). ``<step>`` is
the number of completed optimizer steps. The last ``keep`` checkpoints are kept. A step
that cannot be read back (damaged files) is renamed ``<step>.damaged`` and the next older
one is used, with a warning naming both.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Mapping

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from liquid_jax import former_names, paths
from liquid_jax.checkpoint.directory import sync_processes
from liquid_jax.checkpoint.trees import rewrap, unwrap
from liquid_jax.errors import UserError

CHECKPOINT_DIR = "checkpoints"
DAMAGED_SUFFIX = ".damaged"
_RESERVED_ITEMS = ("data", "config", "card")
# How TensorStore reports unreadable files (its status codes); shape or structure
# mismatches are ordinary ValueErrors and never count as damage.
_TENSORSTORE_STATUS = re.compile(r"^(NOT_FOUND|DATA_LOSS|OUT_OF_RANGE|FAILED_PRECONDITION|INVALID_ARGUMENT|"
                                 r"UNKNOWN|INTERNAL|UNAVAILABLE|ABORTED): ")


def _is_damage(error: BaseException) -> bool:
    """Whether ``error`` says a checkpoint's files are missing, truncated or garbled."""
    return isinstance(error, (OSError, json.JSONDecodeError, UnicodeDecodeError)) or bool(
        _TENSORSTORE_STATUS.match(str(error)))
# Model fields that change how the step is computed but not what is stored.
NUMERICS_FIELDS = ("dtype", "remat", "scan_layers")


class IncompatibleCheckpointError(UserError):
    """The workdir holds a checkpoint of a different model."""


class NoCheckpointError(UserError):
    """A workdir has no readable training checkpoint."""


def is_workdir(path: str | epath.PathLike) -> bool:
    """Whether ``path`` is a training workdir with at least one finished checkpoint."""
    directory = paths.resolve(path) / CHECKPOINT_DIR
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


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


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        unwrap(tree),
    )


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The run config as plain JSON data (stored with every checkpoint)."""
    return json.loads(config.to_json_best_effort())


def _state_items(state: Mapping[str, Any]) -> Mapping[str, Any]:
    clash = [name for name in state if name in _RESERVED_ITEMS]
    if clash:
        raise ValueError(f"train state entries {clash} clash with the checkpoint items {_RESERVED_ITEMS}")
    return state


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
    """Save/restore of (train state, data iterator, config, card) under ``workdir``; the
    state is a mapping of names to pytrees (Flax Variables allowed), one item each.

    ``read_only`` opens a workdir to read its checkpoints (export, loading): nothing is
    created and damaged steps are skipped without being renamed.
    """

    def __init__(
        self,
        workdir: str | epath.PathLike,
        *,
        save_every: int = 1,
        keep: int = 1,
        use_async: bool = True,
        read_only: bool = False,
    ):
        self.directory = paths.resolve(workdir) / CHECKPOINT_DIR
        self.save_every = save_every
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=max(save_every, 1),
            enable_async_checkpointing=use_async,
            create=not read_only,
            read_only=read_only,
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
        """Raises IncompatibleCheckpointError if checkpoint ``step`` is of another model
        (fields it names as earlier versions did are read under their current names)."""
        saved = former_names.current(self.saved_config(step).get("model", {}), former_names.VQGAN_CONFIG)
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
        state: Mapping[str, Any],
        data_iterator: Any,
        config: dict[str, Any],
        card: dict[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Starts an asynchronous save if ``step`` is due (or ``force``); True if started."""
        items = {name: ocp.args.StandardSave(unwrap(tree)) for name, tree in _state_items(state).items()}
        items["config"] = ocp.args.JsonSave(config)
        if card is not None:
            items["card"] = ocp.args.JsonSave(card)
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(_JsonStateIterator(data_iterator))
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def _newest_intact(self, read: Callable[[int], Any], step: int | None = None) -> tuple[int, Any]:
        """(step, ``read(step)``) for ``step``, or else the newest step that reads back.

        A step that fails to read is reported and, unless read-only, renamed
        ``<step>.damaged`` so that later saves and resumes pass it by.
        """
        steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
        if step is not None and step not in self.all_steps():
            raise NoCheckpointError(f"{self.directory} has no step {step}; it has {sorted(self.all_steps())}")
        for candidate in steps:
            try:
                return candidate, read(candidate)
            except Exception as e:
                if not _is_damage(e):
                    raise
                reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                if step is not None:
                    raise NoCheckpointError(f"{self.directory / str(step)} cannot be read: {reason}") from e
                self._set_aside(candidate, reason)
        raise NoCheckpointError(f"{self.directory} holds no readable checkpoint; start a new run "
                                "or point --workdir at another one")

    def _set_aside(self, step: int, reason: str) -> None:
        older = [s for s in self.all_steps() if s < step]
        logging.warning("checkpoint step %d in %s is damaged (%s); falling back to step %s",
                        step, self.directory, reason, max(older) if older else "none")
        if self.read_only:
            return
        if jax.process_index() == 0:
            damaged = self.directory / f"{step}{DAMAGED_SUFFIX}"
            if damaged.exists():
                damaged.rmtree()
            (self.directory / str(step)).rename(damaged)
        sync_processes(f"liquid_jax_damaged_{step}")
        self._manager.reload()

    def restore(
        self,
        state: Mapping[str, Any],
        data_iterator: Any,
        model_config: dict[str, Any],
    ) -> tuple[int, dict[str, Any]]:
        """(step, state) of the newest intact checkpoint, each entry of ``state`` restored
        into its shapes/shardings (and Variable wrappers; arrays or ShapeDtypeStructs); the
        data iterator is restored in place. A checkpoint of another model than
        ``model_config`` raises IncompatibleCheckpointError."""

        def read(step: int) -> dict[str, Any]:
            self.check_model(step, model_config)
            items = {name: ocp.args.StandardRestore(_abstract(tree)) for name, tree in _state_items(state).items()}
            if data_iterator is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(_JsonStateIterator(data_iterator))
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            return {name: rewrap(tree, restored[name]) for name, tree in state.items()}

        return self._newest_intact(read)

    def restore_model(self, step: int | None, load: Callable[[dict[str, Any], epath.Path], Any]) -> tuple[int, Any]:
        """(step, ``load(card, params_dir)``) for checkpoint ``step``, or for the newest one
        that reads back; ``params_dir`` is the Orbax PyTree of the step's parameters."""

        def read(candidate: int) -> Any:
            card = self._manager.restore(candidate, args=ocp.args.Composite(card=ocp.args.JsonRestore()))["card"]
            return load(card, self.directory / str(candidate) / "params")

        return self._newest_intact(read, step)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
