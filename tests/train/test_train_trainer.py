"""The training loop on a tiny mixed run: learning, metrics files, checkpoints, refusals."""

import os
import subprocess

import pytest
from absl import flags
from ml_collections import config_flags

from helpers import train_support as support
from liquid_jax.checkpoint import train_state
from liquid_jax.model.config import load_config_file
from liquid_jax.train import metrics, trainer
from liquid_jax.train import config as config_lib


@pytest.fixture(scope="module")
def data_paths(tmp_path_factory):
    return support.write_mixed_data(str(tmp_path_factory.mktemp("data")))


def test_tiny_mixed_run_learns_logs_and_checkpoints(data_paths, tmp_path):
    config = support.tiny_config(data_paths)
    config.train.steps = 30
    workdir = str(tmp_path / "run")
    result = trainer.train(config, workdir)
    assert result.step == 30 and not result.preempted and result.skipped_steps == 0

    records = metrics.read_jsonl(os.path.join(workdir, metrics.JSONL_NAME))
    assert [r["step"] for r in records] == list(range(1, 31))
    for key in ("loss", "text_loss", "image_loss", "z_loss", "grad_norm", "learning_rate",
                "tokens_per_second"):
        assert all(key in r for r in records), key
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert any(r["image_tokens"] > 0 for r in records) and any(r["text_tokens"] > 0 for r in records)
    # warm-up: lr rises linearly over the first 10 steps
    assert records[0]["learning_rate"] == 0.0
    assert records[5]["learning_rate"] == pytest.approx(config.optimizer.learning_rate * 0.5, rel=1e-5)

    events = [f for f in os.listdir(os.path.join(workdir, metrics.TENSORBOARD_DIR)) if "tfevents" in f]
    assert events
    with open(os.path.join(workdir, metrics.TENSORBOARD_DIR, events[0]), "rb") as f:
        content = f.read()
    assert b"train/loss" in content and b"train/image_loss" in content

    saver = train_state.TrainCheckpointer(workdir, save_every=10, keep=2)
    assert saver.all_steps() == [20, 30]
    saved = saver.saved_config(30)
    assert saved["model"]["num_layers"] == config.model.num_layers
    saver.close()

    # The same workdir with another model is refused before anything is built.
    other = support.tiny_config(data_paths)
    other.model.num_layers = 3
    with pytest.raises(train_state.IncompatibleCheckpointError, match="num_layers: 2 .* vs 3"):
        trainer.train(other, workdir)


def test_unknown_config_key_names_the_nearest_keys():
    config = load_config_file(support.TINY_CONFIG, "smoke")
    message = config_lib.unknown_override(config, "train.grad_acum_steps")
    assert "grad_accum_steps" in message and "train has no 'grad_acum_steps'" in message
    assert "valid keys" in config_lib.unknown_override(config, "optimizer.zzz")
    assert config_lib.unknown_override(config, "optimizer.learning_rate") is None
    assert config_lib.unknown_override(config, "model.special_tokens.boi") is None


def test_the_codebook_size_is_one_value_of_a_run_config():
    """data.num_image_codes is model.num_image_codes: setting either sets both (and the vocabulary)."""
    argv = ["prog", f"--config={support.TINY_CONFIG}:smoke", "--config.model.num_image_codes=16"]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "run config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert config.data.num_image_codes == config.model.num_image_codes == 16
    assert config.model.vocab_size == 256 + 16
    config.data.num_image_codes = 32
    assert config.model.num_image_codes == 32 and config.model.vocab_size == 256 + 32
    resolved = config.copy_and_resolve_references()
    assert resolved.data.num_image_codes == resolved.model.num_image_codes == 32


def test_cli_rejects_unknown_key_without_traceback(tmp_path):
    run = subprocess.run(
        support.cli_command(
            "train", f"--config={support.TINY_CONFIG}:smoke", f"--workdir={tmp_path}",
            "--config.train.setps=3",
        ),
        env=support.cli_env(1), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert "did you mean steps" in run.stderr and "Traceback" not in run.stderr


def test_config_validation_names_the_key(data_paths, tmp_path):
    config = support.tiny_config(data_paths)
    config.train.nan_policy = "ignore"
    with pytest.raises(ValueError, match="train.nan_policy 'ignore'"):
        trainer.train(config, str(tmp_path))
    config = support.tiny_config(data_paths)
    config.init.kind = "checkpoint"
    with pytest.raises(ValueError, match="needs init.path"):
        trainer.train(config, str(tmp_path))


@pytest.mark.slow  # two more compilations of the step
def test_non_finite_loss_stops_or_skips_by_config(data_paths, tmp_path, monkeypatch):
    config = support.tiny_config(data_paths)
    config.train.steps = 3
    monkeypatch.setattr(config_lib, "validate", lambda config: None)  # it refuses a NaN setting
    config.train.z_loss = float("nan")  # every step's loss is NaN
    with pytest.raises(trainer.NonFiniteLossError, match="step 1: non-finite loss nan.*nan_policy=skip"):
        trainer.train(config, str(tmp_path / "stop"))
    config.train.nan_policy = "skip"
    result = trainer.train(config, str(tmp_path / "skip"))
    assert result.step == 3 and result.skipped_steps == 3
