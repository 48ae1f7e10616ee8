"""The demo's stage runner on toy stages: a finished stage records the settings it ran with
(its config keys and those of every earlier stage); one that ran with other settings is
refused before any stage works, or re-run with ``rerun_changed`` together with the stages
after it; a stage re-run alone puts the later ones out of date; and an interrupted stage
keeps its partial work."""

import json
import os
import shutil

import ml_collections
import pytest

from liquid_jax.demo.stages import DONE_FILE, Context, Stage, read_record, run_stages, stage_settings
from liquid_jax.errors import UserError


def config(**changes) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict({"seed": 0, "data": {"size": 10, "name": "easy", "kind": "png"},
                                   "train": {"steps": 5, "lr": 0.1}, "sample": {"top_k": 1},
                                   "unread": {"x": 1}})
    for key, value in changes.items():
        *section, name = key.split("__")
        (c[section[0]] if section else c)[name] = value
    return c


def toy_stages(calls: list[str]) -> list[Stage]:
    def run(name):
        def work(context):
            calls.append(name)
            with open(context.path(name, "work.txt"), "a") as f:
                f.write("x")
            return {"name": name}
        return work
    return [Stage("data", "", run("data"), ("seed", "data")),
            Stage("train", "", run("train"), ("train.steps", "train.lr")),
            Stage("evaluate", "", run("evaluate"), ("sample",))]


def test_settings_are_each_stages_keys_and_the_earlier_stages(tmp_path):
    settings = stage_settings(toy_stages([]), config())
    assert settings["data"] == {"seed": 0, "data.size": 10, "data.name": "easy", "data.kind": "png"}
    assert settings["train"] == {**settings["data"], "train.steps": 5, "train.lr": 0.1}
    assert settings["evaluate"] == {**settings["train"], "sample.top_k": 1}
    calls = []
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    assert read_record(str(tmp_path), "train")["settings"] == settings["train"]


def test_another_config_is_refused_before_any_stage_works(tmp_path):
    calls = []
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    assert calls == ["data", "train", "evaluate"]
    again = run_stages(toy_stages(calls), Context(config(unread__x=2), str(tmp_path)))
    assert calls == ["data", "train", "evaluate"] and all(r["skipped"] for r in again.values())

    os.remove(os.path.join(tmp_path, "evaluate", DONE_FILE))  # an unfinished stage is not run either
    with pytest.raises(UserError) as refused:
        run_stages(toy_stages(calls), Context(config(train__steps=7), str(tmp_path)))
    message = str(refused.value)
    assert "stage 'train' ran with another config (train.steps was 5 then, 7 now)" in message
    assert str(tmp_path) in message and "--workdir" in message and "--rerun_changed" in message
    assert calls == ["data", "train", "evaluate"]

    with pytest.raises(UserError, match=r"stage 'data' and the 1 after it .*data.name was \"easy\" then, \"hard\""):
        run_stages(toy_stages(calls), Context(config(data__name="hard"), str(tmp_path)))
    with pytest.raises(UserError) as refused:
        run_stages(toy_stages(calls), Context(config(train__steps=7, train__lr=0.5), str(tmp_path)))
    assert "(train.steps was 5 then, 7 now; train.lr was 0.1 then, 0.5 now)" in str(refused.value)
    with pytest.raises(UserError) as refused:
        run_stages(toy_stages(calls), Context(config(seed=1, data__size=2, data__name="a", data__kind="b"),
                                              str(tmp_path)))
    assert "(seed was 0 then, 1 now; data.kind was \"png\" then, \"b\" now; data.name" in str(refused.value)
    assert "data.size" not in str(refused.value) and "; and 1 more)" in str(refused.value)


def test_rerun_changed_redoes_the_changed_stage_and_those_after_it_from_scratch(tmp_path):
    calls = []
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    data_record = read_record(str(tmp_path), "data")
    records = run_stages(toy_stages(calls), Context(config(train__lr=0.2), str(tmp_path)), rerun_changed=True)
    assert calls == ["data", "train", "evaluate", "train", "evaluate"]
    assert [n for n, r in records.items() if r["skipped"]] == ["data"]
    assert read_record(str(tmp_path), "data") == data_record
    assert read_record(str(tmp_path), "evaluate")["settings"]["train.lr"] == 0.2
    with open(tmp_path / "train" / "work.txt") as f:
        assert f.read() == "x"  # redone from an empty directory


def test_one_stage_needs_the_earlier_ones_finished_with_this_config(tmp_path):
    calls = []
    with pytest.raises(UserError, match="--stage train needs stage 'data', which has not finished"):
        run_stages(toy_stages(calls), Context(config(), str(tmp_path)), only="train")
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    redone = run_stages(toy_stages(calls), Context(config(sample__top_k=4), str(tmp_path)), only="evaluate")
    assert list(redone) == ["evaluate"] and calls[-1] == "evaluate"
    assert read_record(str(tmp_path), "evaluate")["settings"]["sample.top_k"] == 4
    with pytest.raises(UserError, match="stage 'data' .* run without --stage, with --rerun_changed"):
        run_stages(toy_stages(calls), Context(config(seed=1), str(tmp_path)), only="evaluate")


def test_a_stage_run_again_puts_the_later_stages_out_of_date(tmp_path):
    calls = []
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)), only="data")
    assert calls == ["data", "train", "evaluate", "data"]
    with pytest.raises(UserError, match="--stage evaluate needs stage 'train', which is out of date: "
                                        "stage 'data' ran again after it; run the demo without --stage"):
        run_stages(toy_stages(calls), Context(config(), str(tmp_path)), only="evaluate")
    records = run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    assert calls == ["data", "train", "evaluate", "data", "train", "evaluate"]
    assert [n for n, r in records.items() if not r["skipped"]] == ["train", "evaluate"]
    data, train = read_record(str(tmp_path), "data"), read_record(str(tmp_path), "train")
    assert train["inputs"] == {"data": data["run_id"]}
    assert read_record(str(tmp_path), "evaluate")["inputs"] == {"data": data["run_id"], "train": train["run_id"]}

    shutil.rmtree(tmp_path / "train")  # a later stage built on a stage that is gone is redone too
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    assert calls[-2:] == ["train", "evaluate"]


def test_an_interrupted_stage_resumes_and_an_old_record_is_not_checked(tmp_path, capsys):
    calls = []
    os.makedirs(tmp_path / "data")
    (tmp_path / "data" / "work.txt").write_text("partial ")
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    assert (tmp_path / "data" / "work.txt").read_text() == "partial x"

    path = tmp_path / "train" / DONE_FILE
    record = json.loads(path.read_text())
    del record["settings"]
    path.write_text(json.dumps(record))
    run_stages(toy_stages(calls), Context(config(), str(tmp_path)))
    assert "skipping (it finished before stages recorded their settings: not checked)" in capsys.readouterr().out
