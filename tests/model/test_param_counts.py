"""Parameter counts of every model config against transformers (meta device, no memory)."""

import pathlib

import pytest
import torch
import transformers
from absl import flags
from ml_collections import config_flags

from helpers import REPO
from liquid_jax.convert.hf_mapping import config_to_hf
from liquid_jax.model.config import TransformerConfig, load_model_config
from liquid_jax.model.transformer import param_count

CONFIGS = pathlib.Path(REPO) / "configs"
# Published sizes of the base (text-only) models.
PUBLISHED = {
    "gemma_2b": 2_506_172_416,
    "gemma_7b": 8_537_680_896,
    "gemma2_2b": 2_614_341_888,
    "gemma2_9b": 9_241_705_984,
    "gemma2_27b": 27_227_128_320,
    "llama3_2_1b": 1_235_814_400,
    "qwen2_5_0_5b": 494_032_768,
    "qwen2_5_1_5b": 1_543_714_304,
    "qwen2_5_7b": 7_615_616_512,
}


def transformers_count(config) -> int:
    hf_config = transformers.AutoConfig.for_model(**config_to_hf(config))
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


@pytest.mark.parametrize("name", sorted(PUBLISHED))
@pytest.mark.parametrize("image_codes", [0, 8192])
def test_param_count_matches_transformers(name, image_codes):
    config = load_model_config(str(CONFIGS / f"{name}.py"), num_image_codes=image_codes)
    ours = param_count(config)
    assert ours == transformers_count(config)
    if image_codes == 0:
        assert ours == PUBLISHED[name]


def test_liquid_v1_7b_has_8_56b_parameters():
    config = load_model_config(str(CONFIGS / "gemma_7b.py"))
    assert config.vocab_size == 264_192 and config.text_vocab_size == 256_000
    count = param_count(config)
    assert round(count / 1e9, 2) == 8.56
    assert count == PUBLISHED["gemma_7b"] + 8192 * 3072


def test_padding_rows_are_counted_only_on_request():
    config = load_model_config(str(CONFIGS / "tiny_llama.py"))  # untied: two padded tables
    padding = 2 * (config.padded_vocab_size - config.vocab_size) * config.d_model
    assert padding > 0
    assert param_count(config, include_padding=True) == param_count(config) + padding


def test_command_line_overrides_reach_the_model_config():
    argv = [
        "prog", f"--config={CONFIGS / 'gemma_7b.py'}", "--config.model.num_image_codes=0",
        "--config.model.scan_layers=True", "--config.model.dtype=bfloat16",
    ]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "model config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    config = TransformerConfig.from_dict(flag_values.config.model.to_dict())
    assert (config.vocab_size, config.num_image_codes) == (256_000, 0)
    assert config.scan_layers and config.dtype == "bfloat16"
    assert param_count(config) == PUBLISHED["gemma_7b"]
