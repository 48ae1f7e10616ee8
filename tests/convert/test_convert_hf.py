"""Hugging Face <-> liquid_jax conversion, checked against transformers."""

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from helpers import REPO
from helpers.hf_dirs import (
    LLAMA_SPECIALS, SP_VOCAB, hf_logits, random_tokens, tiny_hf_model, write_hf_dir,
)
from liquid_jax.checkpoint.card import read_metadata
from liquid_jax.checkpoint.directory import load_params
from liquid_jax.convert import hf, safetensors_io
from liquid_jax.tokenizer.text import load_text_tokenizer

LLAMA_VOCAB = 300 + LLAMA_SPECIALS


def _api_logits(path, tokens, **kwargs):
    import liquid_jax

    return np.asarray(liquid_jax.load(path, progress=False, **kwargs).logits(tokens))


@pytest.mark.parametrize("family, vocab", [("gemma", 512), ("llama", LLAMA_VOCAB)])
def test_round_trip_through_liquid_checkpoint(tmp_path, family, vocab):
    model = tiny_hf_model(family, vocab)
    src = write_hf_dir(tmp_path / "hf", model)
    assert os.path.exists(os.path.join(src, safetensors_io.INDEX_FILE))  # really sharded

    config = hf.convert_hf_to_liquid(src, tmp_path / "ck", extend_image_codes=0, progress=False)
    assert (config.vocab_size, config.num_image_codes, config.tie_embeddings) == (vocab, 0, family == "gemma")
    assert os.path.isfile(tmp_path / "ck" / "tokenizer" / (
        "tokenizer.model" if family == "gemma" else "tokenizer.json"))
    hf.convert_liquid_to_hf(tmp_path / "ck", tmp_path / "out", max_shard_bytes=40_000, progress=False)

    out = tmp_path / "out"
    assert (out / safetensors_io.INDEX_FILE).exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    original = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
    tokens = random_tokens(vocab)
    want = hf_logits(model, tokens)
    np.testing.assert_array_equal(hf_logits(reloaded, tokens), want)
    # Our model on the converted checkpoint agrees with transformers.
    got = _api_logits(tmp_path / "ck", tokens)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    card = json.loads((out / "config.json").read_text())
    special = config.special_tokens
    assert (card["boi_token_id"], card["eoi_token_id"], card["unconditional_token_id"]) == (
        special.boi, special.eoi, special.unconditional)
    tok = load_text_tokenizer(out)
    if family == "gemma":
        assert (special.boi, special.eoi, special.unconditional) == (7, 8, 9)
    else:
        assert tok.id_to_piece(special.boi) == "<|reserved_special_token_0|>"
        assert tok.id_to_piece(special.unconditional) == "<|reserved_special_token_2|>"
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (special.bos, special.eos)


def test_qwen2_without_tokenizer(tmp_path):
    """q/k/v biases survive the round trip; recipe ids fall back to Qwen2.5's released ones."""
    model = tiny_hf_model("qwen2", 160)
    src = write_hf_dir(tmp_path / "hf", model, tokenizer=False)
    config, params = hf.load_hf_params(src, extend_image_codes=0, progress=False)
    assert config.qkv_bias and config.special_tokens.boi == 151652
    hf.export_hf(config, params, tmp_path / "out", progress=False)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", attn_implementation="eager").eval()
    tokens = random_tokens(160)
    np.testing.assert_array_equal(hf_logits(reloaded, tokens), hf_logits(model, tokens))


def test_extended_export_loads_in_transformers_and_is_not_re_extended(tmp_path):
    model = tiny_hf_model("gemma", 512)
    src = write_hf_dir(tmp_path / "hf", model)
    config = hf.convert_hf_to_liquid(src, tmp_path / "ck", extend_image_codes=64, progress=False)
    assert (config.vocab_size, config.num_image_codes) == (576, 64)
    hf.convert_liquid_to_hf(tmp_path / "ck", tmp_path / "out", progress=False)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert reloaded.config.vocab_size == 576
    tokens = random_tokens(512)
    np.testing.assert_allclose(hf_logits(reloaded, tokens)[..., :512], hf_logits(model, tokens),
                               rtol=1e-5, atol=1e-5)
    # The exported config records num_image_codes, so a second conversion keeps 576.
    again = hf.convert_hf_to_liquid(tmp_path / "out", tmp_path / "ck2", progress=False)
    assert (again.vocab_size, again.num_image_codes) == (576, 64)


def test_liquid_shaped_checkpoint_is_recognised(tmp_path):
    # Like Liquid_V1_7B: vocab = tokenizer size + 8192 and no marker in config.json.
    model = tiny_hf_model("gemma", SP_VOCAB + 8192, d_model=16, layers=1)
    src = write_hf_dir(tmp_path / "hf", model)
    assert "num_image_codes" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    config, params = hf.load_hf_params(src, progress=False)  # default: extend by 8192
    assert (config.vocab_size, config.num_image_codes, config.text_vocab_size) == (SP_VOCAB + 8192, 8192, SP_VOCAB)
    np.testing.assert_array_equal(params["embed"]["embedding"],
                                  model.model.embed_tokens.weight.detach().numpy())
    # Without a tokenizer only Gemma's released size is recognised.
    assert hf.infer_num_image_codes({"model_type": "gemma", "vocab_size": 264192}, None) == 8192
    assert hf.infer_num_image_codes({"model_type": "gemma", "vocab_size": 256000}, None) == 0
    assert hf.infer_num_image_codes({"model_type": "llama", "vocab_size": 264192}, None) == 0


def test_padded_vocabulary_is_invisible(tmp_path):
    model = tiny_hf_model("llama", LLAMA_VOCAB)
    src = write_hf_dir(tmp_path / "hf", model)
    config = hf.convert_hf_to_liquid(src, tmp_path / "ck", extend_image_codes=16,
                                     vocab_pad_multiple=128, progress=False)
    assert (config.vocab_size, config.padded_vocab_size) == (LLAMA_VOCAB + 16, 384)
    params, _ = load_params(tmp_path / "ck")
    for table in (params["embed"]["embedding"], params["lm_head"]["weight"]):
        assert table.shape == (384, 32)
        assert not table[config.vocab_size:].any()
    tokens = random_tokens(LLAMA_VOCAB)
    logits = _api_logits(tmp_path / "ck", tokens)
    assert logits.shape == (2, 12, config.vocab_size)
    np.testing.assert_allclose(logits[..., :LLAMA_VOCAB], hf_logits(model, tokens), rtol=1e-4, atol=1e-4)
    hf.convert_liquid_to_hf(tmp_path / "ck", tmp_path / "out", progress=False)
    exported = safetensors.numpy.load_file(tmp_path / "out" / "model.safetensors")
    assert exported["model.embed_tokens.weight"].shape == (config.vocab_size, 32)
    assert exported["lm_head.weight"].shape == (config.vocab_size, 32)


def test_bfloat16_conversion(tmp_path):
    import ml_dtypes

    model = tiny_hf_model("gemma", 512)
    src = write_hf_dir(tmp_path / "hf", model)
    config, params = hf.load_hf_params(src, dtype="bfloat16", extend_image_codes=0, progress=False)
    assert config.param_dtype == "bfloat16"
    emb = params["embed"]["embedding"]
    assert emb.dtype == ml_dtypes.bfloat16
    want = model.model.embed_tokens.weight.detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(emb.astype(np.float32), want)


# ----------------------------------------------------------------------------- bad input


def _src(tmp_path, family="llama"):
    vocab = LLAMA_VOCAB if family == "llama" else 512
    return write_hf_dir(tmp_path / "hf", tiny_hf_model(family, vocab))


def _shard_holding(src, tensor):
    index = json.loads(open(os.path.join(src, safetensors_io.INDEX_FILE)).read())
    return os.path.join(src, index["weight_map"][tensor])


def _expect_failure(src, dest, exc, pattern):
    with pytest.raises(exc, match=pattern):
        hf.convert_hf_to_liquid(src, dest, progress=False)
    assert not os.path.exists(dest)
    assert not any(n.startswith(f".{os.path.basename(dest)}") for n in os.listdir(os.path.dirname(dest)))


def test_missing_tensor(tmp_path):
    src = _src(tmp_path)
    name = "model.layers.1.mlp.up_proj.weight"
    shard = _shard_holding(src, name)
    tensors = safetensors.numpy.load_file(shard)
    del tensors[name]
    safetensors.numpy.save_file(tensors, shard, metadata={"format": "pt"})
    index_path = os.path.join(src, safetensors_io.INDEX_FILE)
    index = json.loads(open(index_path).read())
    del index["weight_map"][name]
    open(index_path, "w").write(json.dumps(index))
    _expect_failure(src, str(tmp_path / "dest"), hf.ConversionError, r"hf.*no tensor 'model\.layers\.1\.mlp\.up_proj\.weight'")


def test_wrong_shape(tmp_path):
    src = _src(tmp_path)
    name = "model.layers.0.self_attn.k_proj.weight"
    shard = _shard_holding(src, name)
    tensors = safetensors.numpy.load_file(shard)
    tensors[name] = tensors[name][:8]
    safetensors.numpy.save_file(tensors, shard, metadata={"format": "pt"})
    _expect_failure(src, str(tmp_path / "dest"), ValueError,
                    rf"{os.path.basename(shard)}: tensor '{name}': expected shape \(16, 32\), got \(8, 32\)")


def test_unknown_architecture(tmp_path):
    src = _src(tmp_path)
    config_path = os.path.join(src, "config.json")
    card = json.loads(open(config_path).read())
    card.update(model_type="mistral", architectures=["MistralForCausalLM"])
    open(config_path, "w").write(json.dumps(card))
    _expect_failure(src, str(tmp_path / "dest"), ValueError, r"config\.json.*mistral")


@pytest.mark.parametrize("cut", ["header", "data"])
def test_truncated_safetensors(tmp_path, cut):
    src = _src(tmp_path)
    name = "model.layers.1.self_attn.o_proj.weight"
    shard = _shard_holding(src, name)
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:20] if cut == "header" else data[:-100])
    _expect_failure(src, str(tmp_path / "dest"), ValueError,
                    rf"{os.path.basename(shard)}.*(corrupt|truncated|cannot read).*'model\.layers\.")


def test_no_overwrite(tmp_path):
    src = _src(tmp_path, "gemma")
    (tmp_path / "dest").mkdir()
    with pytest.raises(FileExistsError, match="dest"):
        hf.convert_hf_to_liquid(src, tmp_path / "dest", progress=False)


# ----------------------------------------------------------------------------- memory, mesh, CLI


def test_streaming_peak_host_memory(tmp_path):
    """Peak host allocations while reading stay under 1.3x the model's size."""
    model = tiny_hf_model("llama", LLAMA_VOCAB, d_model=256, layers=10)
    src = write_hf_dir(tmp_path / "hf", model, max_shard_size="2MB")
    model_bytes = sum(p.numel() * 4 for p in model.parameters())
    del model
    assert model_bytes > 20e6
    tracemalloc.start()
    try:
        _, params = hf.load_hf_params(src, extend_image_codes=0, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = sum(a.nbytes for a in __import__("jax").tree.leaves(params))
    assert held == model_bytes
    print(f"model {model_bytes / 1e6:.1f} MB, peak traced {peak / 1e6:.1f} MB ({peak / model_bytes:.3f}x)")
    assert peak <= 1.3 * model_bytes


def test_conversion_peak_resident_memory(tmp_path):
    """Both conversions stream: the benchmark, run as its own process on a ~40 MB model
    (HF -> liquid_jax with the 8192-code extension, then back), peaks at most 1.3x the
    model's size in resident memory above the jax/Orbax runtime's own.

    glibc is told to return freed blocks to the system at once; by default it keeps
    blocks of up to 32 MB cached per thread, a bounded cost that would dominate a model
    this small but not a real one (the benchmark's recorded results use the default).
    """
    root = REPO
    out = tmp_path / "result.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", MALLOC_MMAP_THRESHOLD_=str(1024**2),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    run = subprocess.run(
        [sys.executable, os.path.join(root, "benchmarks", "convert_hf.py"), "--d_model=256", "--layers=10",
         "--vocab=512", "--shard_mb=8", f"--out={out}"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert 30 < result["model_mb_float32"] < 60
    assert result["hf_to_liquid_peak_rss_over_model"] <= 1.3
    assert result["liquid_to_hf_peak_rss_over_model"] <= 1.3


def test_load_on_mesh_places_sharded_parameters(tmp_path):
    import jax
    from jax.sharding import PartitionSpec as P

    from liquid_jax.sharding import make_mesh

    model = tiny_hf_model("llama", LLAMA_VOCAB)
    src = write_hf_dir(tmp_path / "hf", model)
    mesh = make_mesh((2, 2, 2))
    config, params = hf.load_hf_params(src, extend_image_codes=10, vocab_pad_multiple=8,
                                       mesh=mesh, progress=False)
    emb = params["embed"]["embedding"]
    assert isinstance(emb, jax.Array) and emb.sharding.spec == P("tensor", "fsdp")
    assert emb.shape == (config.padded_vocab_size, 32) and config.padded_vocab_size % 8 == 0
    assert emb.addressable_shards[0].data.shape == (config.padded_vocab_size // 2, 16)
    up = params["layers"]["mlp"]["up_proj"]["kernel"]
    assert len({s.device for s in up.addressable_shards}) == 8
    np.testing.assert_array_equal(
        np.asarray(up)[1], model.model.layers[1].mlp.up_proj.weight.detach().numpy().T)


def test_cli_round_trip(tmp_path):
    model = tiny_hf_model("gemma", 512, d_model=16, layers=1)
    src = write_hf_dir(tmp_path / "hf", model)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "liquid_jax.cli", "convert", "hf", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )
    first = run(f"--input={src}", f"--output={tmp_path / 'ck'}", "--extend_image_codes=32",
                "--vocab_pad_multiple=64", "--dtype=bfloat16")
    assert first.returncode == 0, first.stderr
    assert "vocab 544 (32 image codes)" in first.stdout
    meta = read_metadata(tmp_path / "ck")
    assert meta["config"]["vocab_pad_multiple"] == 64 and meta["config"]["param_dtype"] == "bfloat16"
    second = run("--to=hf", f"--input={tmp_path / 'ck'}", f"--output={tmp_path / 'out'}")
    assert second.returncode == 0, second.stderr
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.config.vocab_size == 544 and reloaded.dtype == torch.bfloat16
