"""Model properties travel with the model: the image format (size prefix, grids, pixels
per code) through training, export and import, and special-token ids read from a
checkpoint's own tokenizer files."""

import json
import logging

import numpy as np

from helpers import train_support as support
import liquid_jax
from helpers.hf_dirs import SP_VOCAB, tiny_hf_model, write_hf_dir
from helpers.upstream_t2i import upstream_t2i
from liquid_jax.convert import hf
from liquid_jax.checkpoint.model import read_model_card
from liquid_jax.model.config import SpecialTokens
from liquid_jax.model.image_format import UPSTREAM
from liquid_jax.sample.images import guided_batch
from liquid_jax.train import export, trainer

SUFFIX = " Generate an image based on this description."


def test_an_upstream_model_at_another_grid_is_prompted_as_upstreams_loop(tmp_path):
    """Like Liquid_V1_7B: vocabulary = tokenizer + 8192 codes, nothing recorded in config.json."""
    model = tiny_hf_model("gemma", SP_VOCAB + 8192, d_model=32, layers=2)
    src = write_hf_dir(tmp_path / "hf", model)
    lm = liquid_jax.load(src, progress=False)
    assert lm.image == UPSTREAM and not lm.image.size_prefix
    prompts = ["a red circle", "two blue squares"]
    ours = lm.generate_images(prompts, guidance_scale=3.0, top_k=1, num_images=1, grid=(4, 4), progress=False).codes
    former_name = lm.generate_images(prompts, cfg=3.0, top_k=1, num_images=1, grid=(4, 4), progress=False).codes
    np.testing.assert_array_equal(former_name, ours)  # cfg: guidance_scale's former name
    sp, special = lm.vocab.text, lm.config.special_tokens
    rows = [[special.bos] + sp.encode(p + SUFFIX) + [special.boi] for p in prompts]  # upstream's prompts
    rows += [[special.bos, special.unconditional, special.boi]] * len(prompts)
    reference = upstream_t2i(model, rows, 16, SP_VOCAB, 3.0, 0.99, 1, 0.96)
    np.testing.assert_array_equal(ours, reference)


def test_the_size_prefix_survives_export_to_hugging_face_and_back(tmp_path):
    paths = support.write_mixed_data(str(tmp_path))
    config = support.tiny_config(paths)
    config.train.steps, config.checkpoint.every = 2, 2
    config.data.size_prefix = True
    trainer.train(config, str(tmp_path / "run"))
    export.export(tmp_path / "run", tmp_path / "hf", to="hf")
    recorded = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert recorded["image_size_prefix"] is True and recorded["image_grids"] == [[4, 4]]
    lm = liquid_jax.load(tmp_path / "hf", progress=False)
    assert lm.image.size_prefix and lm.image.grids == ((4, 4),) and lm.image.pixels_per_code == 16
    hf.convert_hf_to_liquid(tmp_path / "hf", tmp_path / "back", progress=False)
    assert read_model_card(tmp_path / "back")[1] == lm.image
    # Sampling prompts carry the prefix as training wrote it (grid 4x4, 16 px per code).
    rows = guided_batch(lm.vocab, ["a red cat"], 1, lm.image.default_grid, lm.image.pixels_per_code,
                        size_prefix=lm.image.size_prefix)
    assert all(lm.vocab.decode(r).startswith("Image Size: Width is 64 Height is 64.") for r in rows)


def test_special_tokens_come_from_the_checkpoints_tokenizer_files(tmp_path, caplog):
    model = tiny_hf_model("gemma", SP_VOCAB, d_model=16, layers=1)
    src = write_hf_dir(tmp_path / "hf", model)
    # ids in the tiny SentencePiece model: <2mass> 5, [@BOS@] 6, <unused0..2> 7..9
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "[@BOS@]",
        "added_tokens_decoder": {"9": {"content": "<boi>"}, "8": {"content": "<eoi>"},
                                 "7": {"content": "<unconditional>"}},
    }))
    (tmp_path / "hf" / "special_tokens_map.json").write_text(json.dumps({"eos_token": {"content": "<2mass>"}}))
    config, _ = hf.load_hf_params(src, extend_image_codes=0, progress=False)
    assert config.special_tokens == SpecialTokens(bos=6, eos=5, pad=0, boi=9, eoi=8, unconditional=7)

    # Without tokenizer files the family's released ids are assumed, and said so.
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "hf" / name).unlink()
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    with caplog.at_level(logging.WARNING):
        config = hf.hf_to_config(hf_config)
    assert (config.special_tokens.boi, config.special_tokens.eoi, config.special_tokens.unconditional) == (7, 8, 9)
    assert "boi, eoi, unconditional: assumed" in caplog.text


def test_the_family_table_is_only_a_fallback():
    # A config.json recording the recipe ids (our exports) wins over any tokenizer name.
    hf_config = {"model_type": "gemma", "vocab_size": 300, "hidden_size": 8, "num_hidden_layers": 1,
                 "num_attention_heads": 1, "intermediate_size": 16, "boi_token_id": 20, "eoi_token_id": 21,
                 "unconditional_token_id": 22, "bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0}
    config = hf.hf_to_config(hf_config)
    assert config.special_tokens == SpecialTokens(bos=2, eos=1, pad=0, boi=20, eoi=21, unconditional=22)
