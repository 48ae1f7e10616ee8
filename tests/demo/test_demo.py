"""The demo end to end on its smoke preset: every stage runs, the report is sane, the
models are real Hugging Face / liquid_jax checkpoints, and finished stages are skipped."""

import json
import math
import os

import pytest

from helpers import REPO
from liquid_jax import former_names
from liquid_jax.demo import evaluate, experiments, heldout, liquid_stage, timing, training
from liquid_jax.demo.pipeline import STAGE_NAMES, STAGES, run_demo
from liquid_jax.demo.stages import DONE_FILE, Context, read_record, stage_settings
from liquid_jax.errors import UserError
from liquid_jax.model.config import load_config_file

CONFIG = os.path.join(REPO, "configs", "demo.py")
REQUIRED = ("t2i_accuracy", "caption_accuracy", "text_ppl_base", "text_ppl_liquid", "vqgan_psnr",
            "train_tokens_per_s", "sample_image_tokens_per_s")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    context = Context(load_config_file(CONFIG, "smoke"), str(tmp_path_factory.mktemp("demo")))
    records = run_demo(context)
    return context, records


def test_every_stage_runs_and_records_its_time(demo):
    context, records = demo
    assert list(records) == list(STAGE_NAMES)
    for name, record in records.items():
        assert not record["skipped"]
        assert record["seconds"] > 0
        assert os.path.exists(os.path.join(context.workdir, name, DONE_FILE))


def test_report_has_the_headline_metrics_with_sane_values(demo):
    context, _ = demo
    with open(os.path.join(context.workdir, "report.json")) as f:
        report = json.load(f)
    metrics = report["metrics"]
    for key in REQUIRED:
        assert math.isfinite(metrics[key]), key
    for key in ("t2i_accuracy", "caption_accuracy", "novel_pair_t2i_accuracy", "novel_pair_caption_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    # A barely trained model is far from certain but better than uniform over its vocabulary.
    vocab = context.outputs("tokenizer")["vocab_size"]
    assert 1.0 < metrics["text_ppl_base"] < vocab
    assert 1.0 < metrics["text_ppl_liquid"] < vocab + context.outputs("vqgan")["num_image_codes"]
    assert metrics["vqgan_psnr"] > 0
    assert metrics["train_tokens_per_s"] > 0 and metrics["sample_image_tokens_per_s"] > 0
    for name in STAGE_NAMES[:-1]:
        assert metrics[f"seconds_{name}"] > 0
    for name in ("t2i_samples", "captions", "liquid_loss", "base_lm_loss"):
        assert os.path.getsize(os.path.join(context.workdir, report["files"][name])) > 0
    with open(os.path.join(context.workdir, "report.html")) as f:
        assert "t2i_samples.png" in f.read()


def test_report_records_the_machine_and_each_stage_against_its_expected_time(demo):
    context, _ = demo
    with open(os.path.join(context.workdir, "report.json")) as f:
        tables = json.load(f)["tables"]
    (machine,) = tables["machine"]
    assert machine["cpu"] and machine["cores"] == os.cpu_count() and machine["matmul_gflops"] > 0
    stages = {row["stage"]: row for row in tables["stages"]}
    assert set(stages) == set(STAGE_NAMES[:-1])
    for name, row in stages.items():
        assert row["seconds"] == pytest.approx(read_record(context.workdir, name)["seconds"], abs=0.05)
        cost = timing.stage_cost_gflop(context.config, name)
        assert row["expected_seconds"] == pytest.approx(cost / machine["matmul_gflops"], abs=0.05)


def test_expected_time_of_a_training_stage_follows_its_steps():
    config = load_config_file(CONFIG)
    before = timing.expected_seconds(config, 200.0, STAGE_NAMES)
    config.liquid.train.steps *= 3
    config.vqgan.steps = 50
    after = timing.expected_seconds(config, 200.0, STAGE_NAMES)
    assert after["liquid"] == pytest.approx(3 * before["liquid"])
    assert after["vqgan"] == pytest.approx(config.step_cost_gflop.vqgan * 50 / 200.0)
    assert after["base_lm"] == before["base_lm"] and after["world"] == before["world"]
    assert set(after) == set(STAGE_NAMES)


def test_both_canvases_are_trained_drawn_and_captioned(demo):
    context, _ = demo
    with open(os.path.join(context.workdir, "report.json")) as f:
        by_canvas = json.load(f)["metrics"]["by_canvas"]
    evaluation = heldout.load_eval(context)
    sizes = [f"{w}x{h}" for h, w in evaluation["canvases"]]
    assert set(by_canvas) == {"64x64", "64x96"} == set(sizes)
    for name, entry in by_canvas.items():
        assert entry["prompts"] == sizes.count(name)
        assert (entry["width"], entry["height"]) == tuple(int(x) for x in name.split("x"))
        assert 0.0 <= entry["t2i_accuracy"] <= 1.0 and 0.0 <= entry["caption_accuracy"] <= 1.0
    assert context.outputs("pretokenize")["buckets"].keys() == {"64x64", "96x64"}
    samples = evaluate.load_samples(context.path("evaluate", evaluate.SAMPLES_FILE))
    drawn = [image.shape[:2] for image in samples["images"]]
    assert drawn == [tuple(c) for c in evaluation["canvases"]]


def test_tokenizer_has_gemma_special_ids(demo):
    from liquid_jax.tokenizer.text import SentencePieceTokenizer

    context, _ = demo
    tokenizer = SentencePieceTokenizer(context.outputs("tokenizer")["path"])
    assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id) == (0, 1, 2)
    assert [tokenizer.piece_to_id(p) for p in ("<boi>", "<eoi>", "<unconditional>")] == [7, 8, 9]


def test_base_model_is_a_hf_text_model_and_liquid_extends_it_by_the_codebook(demo):
    import liquid_jax

    context, _ = demo
    with open(os.path.join(context.outputs("base_lm")["hf_dir"], "config.json")) as f:
        hf_config = json.load(f)
    text_vocab = context.outputs("tokenizer")["vocab_size"]
    assert hf_config["model_type"] == "gemma" and hf_config["vocab_size"] == text_vocab
    liquid = liquid_jax.load(context.outputs("liquid")["model"], progress=False)
    assert liquid.config.text_vocab_size == text_vocab
    assert liquid.config.num_image_codes == context.outputs("vqgan")["num_image_codes"]


def test_a_rerun_skips_finished_stages_and_stage_redoes_one(demo):
    context, _ = demo
    before = {n: read_record(context.workdir, n) for n in STAGE_NAMES}
    again = run_demo(context)
    assert all(r["skipped"] for r in again.values())
    assert {n: read_record(context.workdir, n) for n in STAGE_NAMES} == before
    redone = run_demo(context, only="report")
    assert list(redone) == ["report"] and not redone["report"]["skipped"]
    assert read_record(context.workdir, "world") == before["world"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_demo(context, only="no_such_stage")


def test_a_finished_stage_that_ran_with_another_config_is_refused_before_any_work(demo):
    context, _ = demo
    changed = context.config.copy_and_resolve_references()
    changed.sample.guidance_scale = 3.0
    before = {n: read_record(context.workdir, n) for n in STAGE_NAMES}
    with pytest.raises(UserError, match=r"stage 'evaluate' and the 1 after it ran with another config "
                                        r"\(sample.guidance_scale was 1.5 then, 3.0 now\)"):
        run_demo(Context(changed, context.workdir))
    assert {n: read_record(context.workdir, n) for n in STAGE_NAMES} == before


def test_each_demo_stage_is_settled_by_the_config_it_and_the_earlier_stages_read():
    config = load_config_file(CONFIG)
    default = stage_settings(STAGES, config)
    for key, value, first_changed in (("vqgan.steps", 900, "vqgan"), ("sample.top_k", 4, "evaluate"),
                                      ("world.canvases", ((64, 64), (64, 96)), "world"),
                                      ("liquid.train.steps", 3200, "liquid"), ("experiments.extra_weight", 1, None)):
        changed = config.copy_and_resolve_references()
        section, *path, name = key.split(".")
        target = changed[section]
        for part in path:
            target = target[part]
        target[name] = value
        settings = stage_settings(STAGES, changed)
        differ = [n for n in STAGE_NAMES if settings[n] != default[n]]
        assert differ == ([] if first_changed is None else list(STAGE_NAMES[STAGE_NAMES.index(first_changed):])), key
    preset = stage_settings(STAGES, load_config_file(CONFIG, "canvases"))
    assert [n for n in STAGE_NAMES if preset[n] != default[n]] == list(STAGE_NAMES)


def test_runs_are_trainer_configs_that_follow_the_demo_seed_and_their_steps_unless_set():
    config = load_config_file(CONFIG)
    config.seed, config.liquid.train.steps, config.base.train.seed = 3, 3000, 7
    assert (config.liquid.train.seed, config.liquid.data.seed, config.liquid.checkpoint.every) == (3, 3, 3000)
    assert (config.base.train.seed, config.base.data.seed, config.seed) == (7, 3, 3)
    trainer = training.trainer_config(config.liquid, {"d_model": 8, "num_image_codes": 32, "dtype": "bfloat16"},
                                      "tokenizer.model", [])
    assert trainer.model.to_dict() == {"d_model": 8, "num_image_codes": 32, "dtype": "float32",
                                       "param_dtype": "float32"}
    assert trainer.data.num_image_codes == 32 and trainer.train.seed == 3 and trainer.tokenizer == "tokenizer.model"


def test_override_keys_of_earlier_versions_name_keys_of_the_config():
    argv = ["liquid-jax", "--config.liquid.steps=3000", "--config.base.learning_rate", "1e-3",
            "--config.liquid.text_weight=1", "--config.liquid.train.seed=2", "--workdir=x"]
    assert former_names.current_overrides(argv, former_names.DEMO_CONFIG) == [
        "liquid-jax", "--config.liquid.train.steps=3000", "--config.base.optimizer.learning_rate", "1e-3",
        "--config.liquid_mix.text_weight=1", "--config.liquid.train.seed=2", "--workdir=x"]
    config = load_config_file(CONFIG)
    for key in former_names.DEMO_CONFIG.values():
        *sections, name = key.split(".")
        section = config
        for part in sections:
            section = section[part]
        assert name in section, key


def test_boost_mixes_add_data_to_one_task_only():
    config = load_config_file(CONFIG)
    mixes = experiments.boost_mixes(liquid_stage.LiquidRun(config.liquid, config.liquid_mix), extra=2.0)
    base = mixes["baseline"]
    caption_share = lambda r: r.mix.image_weight * (1 - r.train.data.t2i_ratio)  # noqa: E731
    t2i_share = lambda r: r.mix.image_weight * r.train.data.t2i_ratio  # noqa: E731
    assert caption_share(mixes["+ t2i data"]) == pytest.approx(caption_share(base))
    assert t2i_share(mixes["+ t2i data"]) == pytest.approx(t2i_share(base) + 2.0)
    assert t2i_share(mixes["+ caption data"]) == pytest.approx(t2i_share(base))
    assert caption_share(mixes["+ caption data"]) == pytest.approx(caption_share(base) + 2.0)


def test_two_shape_oversampling_changes_the_training_scenes_only():
    from liquid_jax.demo import world as world_stage
    from liquid_jax.shapes.world import sample_scenes

    c = load_config_file(CONFIG).world
    own = world_stage.world_of(c)
    c.train_two_shape_fraction = -1.0
    assert world_stage.training_world(c) == own
    c.train_two_shape_fraction = 0.6
    scenes = sample_scenes(2000, "train", 0, world_stage.training_world(c))
    two = sum(len(s.shapes) == 2 for s in scenes) / len(scenes)
    # Training scenes with a held-out (colour, kind) pair are redrawn, two-shape ones more often.
    kept = 1 - len(own.heldout_pairs) / (len(own.colours) * len(own.kinds))
    expected = 0.6 * kept**2 / (0.6 * kept**2 + 0.4 * kept)
    assert abs(two - expected) < 0.045  # 4 standard errors
    # Held-out prompts are drawn from the world itself.
    assert own.two_shape_fraction == 0.25 and world_stage.world_of(c) == own
