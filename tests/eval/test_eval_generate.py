"""``liquid-jax eval generate``: each benchmark's prompt file in its published format in, the
layout its official scorer reads out; sharded over devices and hosts; resumable after kill -9.

With greedy settings (top-k 1, on a model whose image codes are not tied) a prompt's
image depends on the prompt alone, so every file
is checked against a direct one-prompt ``generate_images`` call: the right image for the
right prompt, whatever the batching, sharding or host split.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import portpicker
import pytest

from helpers import REPO
import liquid_jax
from helpers.sample_models import tiny_checkpoints
from liquid_jax.eval import benchmarks, generate

GREEDY = dict(grid=(4, 4), top_k=1, guidance_scale=3.0)  # 4x4 codes of 2 px: 8x8 images
CLI_GREEDY = ["--grid=4x4", "--top_k=1", "--guidance_scale=3", "--dtype=float32"]
WORDS = ["a red square", "two blue circles", "a green tree at night", "an old yellow car", "the sea",
         "a cat on a mat", "three stars", "a small house"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    checkpoint, vqgan = tiny_checkpoints(str(tmp_path_factory.mktemp("eval_generate")), image_code_std=0.5)
    lm = liquid_jax.load(checkpoint, progress=False)
    return checkpoint, vqgan, lm, liquid_jax.load_vqgan(vqgan)


def _reference(tiny, text, num_images):
    _, _, lm, codec = tiny
    return lm.generate_images([text], codec, num_images=num_images, progress=False, **GREEDY).images


def _pixels(path):
    return np.asarray(PIL.Image.open(path).convert("RGB"))


def _written(out):
    """Every file under ``out`` but the run's own records."""
    names = set()
    for folder, _, files in os.walk(out):
        for f in files:
            if not f.startswith("eval_generate"):
                names.add(os.path.relpath(os.path.join(folder, f), out))
    return names


def write_prompt_files(directory):
    """Small prompt files in each benchmark's published format."""
    os.makedirs(directory / "dpg_prompts")
    for name, text in [("countbench12", WORDS[0]), ("partiprompts3", WORDS[1])]:
        (directory / "dpg_prompts" / f"{name}.txt").write_text(text + "\n")
    (directory / "meta_data.json").write_text(json.dumps({
        "f3a1c0de": {"category": "animals", "prompt": WORDS[5]},
        "0b7e9d21": {"category": "people", "prompt": WORDS[2]},
        "77c2aa04": {"category": "animals", "prompt": WORDS[6]},
    }))
    geneval = [{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": WORDS[3]},
               {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "yellow"}],
                "exclude": [], "prompt": WORDS[4]}]
    (directory / "evaluation_metadata.jsonl").write_text("".join(json.dumps(g) + "\n" for g in geneval))
    (directory / "genai_image.json").write_text(json.dumps({
        "00000": {"id": "00000", "prompt": WORDS[7], "basic_skills": ["Attribute"], "advanced_skills": []},
        "00001": {"id": "00001", "prompt": WORDS[0], "basic_skills": ["Scene"], "advanced_skills": ["Counting"]},
    }))
    (directory / "PartiPrompts.tsv").write_text(
        "Prompt\tCategory\tChallenge\tNote\n"
        f"{WORDS[1]}\tArts\tBasic\t\n{WORDS[6]}\tWorld Knowledge\tImagination\tfrom a poem\n")
    (directory / "prompts.jsonl").write_text(json.dumps({"id": "fox", "prompt": WORDS[4]}) + "\n"
                                             + json.dumps({"id": "owl", "prompt": WORDS[3]}) + "\n")
    return {"dpg": directory / "dpg_prompts", "mjhq30k": directory / "meta_data.json",
            "geneval": directory / "evaluation_metadata.jsonl", "genai-bench": directory / "genai_image.json",
            "parti": directory / "PartiPrompts.tsv", "prompts": directory / "prompts.jsonl"}


def test_each_benchmark_writes_its_scorers_layout(tiny, tmp_path):
    _, _, lm, codec = tiny
    files = write_prompt_files(tmp_path)
    expected = {
        "mjhq30k": {"animals/f3a1c0de.png", "people/0b7e9d21.png", "animals/77c2aa04.png"},
        "geneval": {"00000/metadata.jsonl", "00000/samples/0000.png", "00000/samples/0001.png",
                    "00001/metadata.jsonl", "00001/samples/0000.png", "00001/samples/0001.png"},
        "genai-bench": {"00000.jpeg", "00001.jpeg"},
        "dpg": {"countbench12.png", "partiprompts3.png"},
        "parti": {"00000_0.png", "00001_0.png"},
        "prompts": {"fox_0.png", "owl_0.png"},
    }
    for name, path in files.items():
        benchmark = benchmarks.get(name)
        out = tmp_path / f"out_{name}"
        num_images = 2 if name == "geneval" else None
        summary = generate.generate(lm, codec, benchmark, benchmark.read(str(path)), str(out),
                                    num_images=num_images, batch_size=2, progress=False, **GREEDY)
        assert _written(out) == expected[name], name
        assert summary["drawn"] == len(benchmark.read(str(path)))
        assert json.loads((out / generate.SUMMARY_FILE).read_text())["benchmark"] == name

    mjhq = tmp_path / "out_mjhq30k"
    assert not np.array_equal(_pixels(mjhq / "people/0b7e9d21.png"), _pixels(mjhq / "animals/f3a1c0de.png"))
    np.testing.assert_array_equal(_pixels(mjhq / "people/0b7e9d21.png"), _reference(tiny, WORDS[2], 1)[0])
    geneval = tmp_path / "out_geneval"
    assert json.loads((geneval / "00001/metadata.jsonl").read_text()) == json.loads(
        files["geneval"].read_text().splitlines()[1])
    reference = _reference(tiny, WORDS[4], 2)
    for k in range(2):
        np.testing.assert_array_equal(_pixels(geneval / f"00001/samples/{k:04d}.png"), reference[k])
    dpg = _pixels(tmp_path / "out_dpg" / "partiprompts3.png")
    assert dpg.shape == (16, 16, 3)
    tiles = _reference(tiny, WORDS[1], 4)
    top, bottom = np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)
    np.testing.assert_array_equal(dpg, np.concatenate([top, bottom], axis=0))
    genai = PIL.Image.open(tmp_path / "out_genai-bench" / "00001.jpeg")
    assert genai.format == "JPEG" and genai.size == (8, 8)
    np.testing.assert_array_equal(_pixels(tmp_path / "out_prompts" / "owl_0.png"), _reference(tiny, WORDS[3], 1)[0])

    # An unfinished run of an earlier version, whose settings name guidance_scale cfg, resumes.
    out = tmp_path / "out_prompts"
    settings = json.loads((out / generate.SETTINGS_FILE).read_text())
    settings["cfg"] = settings.pop("guidance_scale")
    (out / generate.SETTINGS_FILE).write_text(json.dumps(settings))
    for name in ["fox_0.png", *(f.name for f in out.glob("eval_generate_summary*"))]:
        (out / name).unlink()
    prompts = benchmarks.get("prompts")
    summary = generate.generate(lm, codec, prompts, prompts.read(str(files["prompts"])), str(out),
                                batch_size=2, progress=False, **GREEDY)
    assert summary["files_written"] == 1 and _written(out) == expected["prompts"]


def test_prompt_files_in_the_wrong_format_are_refused(tmp_path):
    files = write_prompt_files(tmp_path)
    with pytest.raises(liquid_jax.errors.UserError, match="category"):
        benchmarks.get("mjhq30k").read(str(files["genai-bench"]))
    with pytest.raises(liquid_jax.errors.UserError, match="line 1 is not JSON"):
        benchmarks.get("geneval").read(str(files["parti"]))
    with pytest.raises(liquid_jax.errors.UserError, match="'Prompt' column"):
        benchmarks.get("parti").read(str(files["prompts"]))
    with pytest.raises(NotADirectoryError, match="folder of <id>.txt"):
        benchmarks.get("dpg").read(str(files["prompts"]))
    with pytest.raises(liquid_jax.errors.UserError, match="scored on 4"):
        benchmarks.get("dpg").check_num_images(2)


def _cli(*args, devices=1, check=True, **popen):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    command = [sys.executable, "-m", "liquid_jax.cli", "eval", "generate", *args]
    if popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_eight_devices_draw_what_one_draws(tiny, tmp_path):
    checkpoint, vqgan, _, _ = tiny
    files = write_prompt_files(tmp_path)
    out = tmp_path / "geneval8"
    _cli("--benchmark=geneval", f"--prompts={files['geneval']}", f"--checkpoint={checkpoint}",
         f"--vqgan={vqgan}", f"--out={out}", "--num_images=2", "--batch_size=2", *CLI_GREEDY, devices=8)
    reference = _reference(tiny, WORDS[3], 2)
    for k in range(2):
        np.testing.assert_array_equal(_pixels(out / f"00000/samples/{k:04d}.png"), reference[k])


def test_two_hosts_split_the_prompts_disjointly_and_completely(tiny, tmp_path):
    checkpoint, vqgan, _, _ = tiny
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(WORDS[:5]) + "\n")
    out = tmp_path / "two_hosts"
    port = portpicker.pick_unused_port()
    common = ["--benchmark=prompts", f"--prompts={prompts}", f"--checkpoint={checkpoint}", f"--vqgan={vqgan}",
              f"--out={out}", "--batch_size=1", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
              *CLI_GREEDY]
    runs = [_cli(*common, f"--process_id={i}", popen=True) for i in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
    summary = json.loads((out / generate.SUMMARY_FILE).read_text())
    drawn = [p["drawn"] for p in summary["processes"]]
    assert drawn == [3, 2] and sum(p["files_written"] for p in summary["processes"]) == 5
    assert _written(out) == {f"{i:05d}_0.png" for i in range(5)}
    np.testing.assert_array_equal(_pixels(out / "00003_0.png"), _reference(tiny, WORDS[3], 1)[0])


def test_kill_9_then_rerun_completes_without_rewriting(tiny, tmp_path):
    checkpoint, vqgan, _, _ = tiny
    prompts = tmp_path / "prompts.txt"
    count = 24
    prompts.write_text("\n".join(f"{WORDS[i % len(WORDS)]} number {i}" for i in range(count)) + "\n")
    out = tmp_path / "killed"
    args = ["--benchmark=prompts", f"--prompts={prompts}", f"--checkpoint={checkpoint}", f"--vqgan={vqgan}",
            f"--out={out}", "--batch_size=1", *CLI_GREEDY]
    run = _cli(*args, popen=True)
    deadline = time.time() + 240
    while len([f for f in _written(out) if f.endswith(".png")]) < 4:
        assert run.poll() is None and time.time() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.communicate()
    before = {f: os.stat(out / f).st_mtime_ns for f in _written(out) if not f.startswith(".")}
    assert 4 <= len(before) < count

    changed = _cli(*args[:-1], "--cfg=5", check=False)  # --cfg: --guidance_scale's former name
    assert changed.returncode == 2 and "guidance_scale" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1

    _cli(*args)
    assert _written(out) == {f"{i:05d}_0.png" for i in range(count)}
    for f in _written(out):
        assert _pixels(out / f).shape == (8, 8, 3)
    assert {f: os.stat(out / f).st_mtime_ns for f in before} == before
    summary = json.loads((out / generate.SUMMARY_FILE).read_text())["processes"][0]
    assert summary["skipped"] == len(before) and summary["files_written"] == count - len(before)


def test_cli_user_errors_exit_2_naming_the_input(tmp_path):
    files = write_prompt_files(tmp_path)
    wrong = _cli("--benchmark=mjhq30k", f"--prompts={files['geneval']}", "--checkpoint=nowhere",
                 "--vqgan=nowhere", f"--out={tmp_path / 'x'}", check=False)
    assert wrong.returncode == 2 and "evaluation_metadata.jsonl" in wrong.stderr
    dpg = _cli("--benchmark=dpg", f"--prompts={files['dpg']}", "--checkpoint=nowhere", "--vqgan=nowhere",
               f"--out={tmp_path / 'y'}", "--num_images=2", check=False)
    assert dpg.returncode == 2 and "--num_images" in dpg.stderr
    assert len(dpg.stderr.strip().splitlines()) == 1
