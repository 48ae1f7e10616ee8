"""A tiny stage runner: each stage works in ``<workdir>/<stage>/`` and, when it finishes,
writes ``<workdir>/<stage>/done.json`` (its outputs, wall and CPU seconds, the settings it
ran with and the runs of the earlier stages it built on). A finished stage is skipped on the
next run unless an earlier stage ran again after it (then it and the stages after it are
redone); ``only`` re-runs one stage from scratch. A finished stage whose settings differ from
this run's is refused before any work (or, with ``rerun_changed``, re-run): a stage's
settings are the config keys it reads and those of every stage before it, whose outputs it
builds on."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from typing import Any, Callable, Sequence

import ml_collections
from tqdm import tqdm

from liquid_jax.errors import UserError

DONE_FILE = "done.json"


@dataclasses.dataclass(frozen=True)
class Context:
    """What every stage gets: the demo config and the work directory."""

    config: ml_collections.ConfigDict
    workdir: str

    def stage_dir(self, stage: str) -> str:
        path = os.path.join(self.workdir, stage)
        os.makedirs(path, exist_ok=True)
        return path

    def path(self, stage: str, *parts: str) -> str:
        return os.path.join(self.workdir, stage, *parts)

    def outputs(self, stage: str) -> dict[str, Any]:
        """The outputs recorded by a finished stage; raises if it has not run."""
        record = read_record(self.workdir, stage)
        if record is None:
            raise RuntimeError(f"stage {stage!r} has not finished in {self.workdir}; run it first")
        return record["outputs"]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the demo: ``run(context)`` returns JSON-able outputs; ``config_keys`` are
    the (dotted) config keys it reads."""

    name: str
    description: str
    run: Callable[[Context], dict[str, Any]]
    config_keys: tuple[str, ...] = ()


def read_record(workdir: str, stage: str) -> dict[str, Any] | None:
    """The done-marker of ``stage`` or None when it has not finished."""
    path = os.path.join(workdir, stage, DONE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_record(workdir: str, stage: str, record: dict[str, Any]) -> None:
    path = os.path.join(workdir, stage, DONE_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    else:
        into[prefix] = value


def stage_settings(stages: Sequence[Stage], config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
    """Each stage's settings: the values of its config keys and of every earlier stage's,
    flattened to dotted keys, as JSON has them."""
    resolved = config.copy_and_resolve_references().to_dict()
    settings: dict[str, Any] = {}
    by_stage = {}
    for stage in stages:
        for key in stage.config_keys:
            value = resolved
            for part in key.split("."):
                value = value[part]
            _flatten(key, value, settings)
        by_stage[stage.name] = json.loads(json.dumps(settings))
    return by_stage


def _differences(then: dict[str, Any], now: dict[str, Any], shown: int = 3) -> str:
    """The keys whose values differ (the first ``shown`` of them), with both values."""
    keys = [k for k in dict.fromkeys([*now, *then]) if then.get(k, "not set") != now.get(k, "not set")]
    text = "; ".join(f"{k} was {json.dumps(then.get(k, 'not set'))} then, {json.dumps(now.get(k, 'not set'))} now"
                     for k in keys[:shown])
    return text + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


def _ran_again(record: dict[str, Any], earlier: Sequence[str], records: dict[str, dict | None]) -> str | None:
    """The first of the ``earlier`` stages that is unfinished or ran again after ``record``'s
    stage finished (records of versions without run ids are not checked), or None."""
    for name in earlier:
        current = records[name]
        if current is None:
            return name
        if "inputs" in record and current.get("run_id") != record["inputs"].get(name):
            return name
    return None


def stages_to_run(
    stages: Sequence[Stage], context: Context, only: str | None = None, rerun_changed: bool = False
) -> list[str]:
    """The names of the stages a run will work on: ``only``; or the first stage that has not
    finished, that an earlier stage ran again after, or (with ``rerun_changed``) that ran with
    other settings, and every stage after it. A finished stage with other settings, or
    (before ``only``) one unfinished or out of date, raises a UserError that says why."""
    names = [s.name for s in stages]
    if only is not None and only not in names:
        raise ValueError(f"unknown stage {only!r}; stages: {', '.join(names)}")
    settings = stage_settings(stages, context.config)
    checked = names[:names.index(only)] if only is not None else names
    records = {name: read_record(context.workdir, name) for name in checked}
    unfinished, changed, outdated = [], [], []
    for i, name in enumerate(checked):
        record = records[name]
        if record is None:
            unfinished.append(name)
            continue
        if "settings" in record and record["settings"] != settings[name]:
            changed.append((name, _differences(record["settings"], settings[name])))
        cause = _ran_again(record, checked[:i], records)
        if cause is not None:
            outdated.append((name, cause))
    if only is not None and unfinished:
        raise UserError(f"{context.workdir}: --stage {only} needs stage {unfinished[0]!r}, which has not "
                        "finished there; run the demo without --stage first")
    if changed and (only is not None or not rerun_changed):
        name, difference = changed[0]
        rest = f" and the {len(changed) - 1} after it" if len(changed) > 1 else ""
        remedy = ("run without --stage, with --rerun_changed" if only is not None
                  else "--rerun_changed to re-run them here (their outputs are replaced)")
        raise UserError(f"{context.workdir}: stage {name!r}{rest} ran with another config ({difference}); "
                        f"use a new --workdir for this config, or {remedy}")
    if only is not None and outdated:
        name, cause = outdated[0]
        raise UserError(f"{context.workdir}: --stage {only} needs stage {name!r}, which is out of date: stage "
                        f"{cause!r} ran again after it; run the demo without --stage to redo {name!r} and the "
                        "stages after it")
    if only is not None:
        return [only]
    redo = set(unfinished) | {name for name, _ in outdated} | {name for name, _ in changed}
    first = min((names.index(name) for name in redo), default=len(names))
    return names[first:]


def run_stages(
    stages: Sequence[Stage], context: Context, only: str | None = None, rerun_changed: bool = False
) -> dict[str, dict[str, Any]]:
    """Runs the stages of ``stages_to_run`` in order and returns every stage's record,
    including ``seconds`` and ``skipped``. Each record names its run (``run_id``) and the
    runs of the earlier stages it was built on (``inputs``)."""
    todo = stages_to_run(stages, context, only, rerun_changed)
    settings = stage_settings(stages, context.config)
    names = [s.name for s in stages]
    records: dict[str, dict[str, Any]] = {}
    for stage in tqdm([s for s in stages if only in (None, s.name)], desc="demo stages", unit="stage"):
        record = read_record(context.workdir, stage.name)
        if record is not None and stage.name not in todo:
            unchecked = ("" if "settings" in record
                         else " (it finished before stages recorded their settings: not checked)")
            tqdm.write(f"== stage {stage.name}: already done ({record['seconds']:.1f} s); skipping{unchecked}")
            records[stage.name] = {**record, "skipped": True}
            continue
        # A finished stage re-runs from scratch; an interrupted one resumes its checkpoints.
        if record is not None or stage.name == only:
            shutil.rmtree(context.path(stage.name), ignore_errors=True)
        again = "" if record is None else " (again: it or an earlier stage changed)"
        tqdm.write(f"== stage {stage.name}: {stage.description}{again}")
        context.stage_dir(stage.name)
        inputs = {name: (read_record(context.workdir, name) or {}).get("run_id")
                  for name in names[:names.index(stage.name)]}
        start, start_cpu = time.perf_counter(), time.process_time()
        outputs = stage.run(context)
        record = {"stage": stage.name, "seconds": time.perf_counter() - start,
                  "cpu_seconds": time.process_time() - start_cpu, "outputs": outputs,
                  "settings": settings[stage.name], "run_id": uuid.uuid4().hex, "inputs": inputs}
        _write_record(context.workdir, stage.name, record)
        tqdm.write(f"== stage {stage.name}: done in {record['seconds']:.1f} s")
        records[stage.name] = {**record, "skipped": False}
    return records


def stage_times(workdir: str, stages: Sequence[Stage]) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of each finished stage, as recorded when it ran."""
    times = {}
    for stage in stages:
        record = read_record(workdir, stage.name)
        if record is not None:
            times[stage.name] = {"seconds": float(record["seconds"]),
                                 "cpu_seconds": float(record.get("cpu_seconds", 0.0))}
    return times
