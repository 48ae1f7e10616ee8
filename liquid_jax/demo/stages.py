"""A tiny stage runner: each stage works in ``<workdir>/<stage>/`` and, when it finishes,
writes ``<workdir>/<stage>/done.json`` (its outputs, wall and CPU seconds). A finished stage
is skipped on the next run; ``only`` re-runs one stage from scratch."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Sequence

import ml_collections
from tqdm import tqdm

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
    """One step of the demo: ``run(context)`` returns JSON-able outputs."""

    name: str
    description: str
    run: Callable[[Context], dict[str, Any]]


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


def run_stages(
    stages: Sequence[Stage], context: Context, only: str | None = None
) -> dict[str, dict[str, Any]]:
    """Runs the unfinished stages in order (or just ``only``, redone from scratch) and
    returns every stage's record, including ``seconds`` and ``skipped``."""
    names = [s.name for s in stages]
    if only is not None and only not in names:
        raise ValueError(f"unknown stage {only!r}; stages: {', '.join(names)}")
    records: dict[str, dict[str, Any]] = {}
    todo = [s for s in stages if only in (None, s.name)]
    for stage in tqdm(todo, desc="demo stages", unit="stage"):
        record = read_record(context.workdir, stage.name)
        if only is not None:
            shutil.rmtree(context.path(stage.name), ignore_errors=True)
            record = None
        if record is not None:
            tqdm.write(f"== stage {stage.name}: already done ({record['seconds']:.1f} s); skipping")
            records[stage.name] = {**record, "skipped": True}
            continue
        tqdm.write(f"== stage {stage.name}: {stage.description}")
        context.stage_dir(stage.name)
        start, start_cpu = time.perf_counter(), time.process_time()
        outputs = stage.run(context)
        record = {"stage": stage.name, "seconds": time.perf_counter() - start,
                  "cpu_seconds": time.process_time() - start_cpu, "outputs": outputs}
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
