"""The README's journey as a new user walks it: its commands, run as written from another
directory with relative paths, on tiny stand-ins for what the user downloads (a Gemma
directory with its tokenizer, Chameleon's vqgan.ckpt + yaml, images with captions, text).

The only change to the README's commands is the model config: the tiny run config stands
in for configs/gemma_7b_liquid.py (the tiny Gemma has its architecture). At the end,
transformers loads the Hugging Face export and its greedy continuation must equal the
``sample text`` command's.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import PIL.Image
import torch
import transformers

from helpers import REPO
from helpers.hf_dirs import train_gemma_like_sentencepiece
from helpers.vqgan_reference import TamingVQ, taming_yaml
from liquid_jax.model.vqgan_config import VQGANConfig

SWAPS = {"configs/gemma_7b_liquid.py": os.path.join(REPO, "configs", "tiny_liquid.py") + ":smoke"}
# configs/tiny_gemma.py: the architecture the tiny run config trains.
TEXT_VOCAB, CODES = 256, 64
VQGAN = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, embed_dim=8, num_image_codes=CODES,
                    resolution=16)  # 16 px images -> 8x8 codes
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def readme_journey() -> list[str]:
    """The commands of README's journey block, one per line, comments dropped."""
    with open(os.path.join(REPO, "README.md")) as f:
        block = re.search(r"<!-- journey -->\n```bash\n(.*?)```\n<!-- /journey -->", f.read(), re.S)
    assert block, "README.md lost its journey block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def run(command: list[str], cwd, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def liquid_jax(line: str, cwd) -> str:
    for old, new in SWAPS.items():
        line = line.replace(old, new)
    words = shlex.split(line)
    assert words[0] == "liquid-jax", line
    done = run([sys.executable, "-m", "liquid_jax.cli", *words[1:]], cwd)
    assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
    return done.stdout


def user_inputs(root) -> None:
    """What the user has downloaded, under ``root``."""
    hf_dir = root / "gemma-7b"
    hf_dir.mkdir()
    config = transformers.GemmaConfig(
        vocab_size=TEXT_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        hidden_act="gelu_pytorch_tanh", bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )
    torch.manual_seed(0)
    transformers.GemmaForCausalLM(config).save_pretrained(hf_dir)
    train_gemma_like_sentencepiece(hf_dir, vocab_size=TEXT_VOCAB, chat=True)
    (hf_dir / "tokenizer.vocab").unlink()

    (root / "chameleon").mkdir()
    torch.save({"state_dict": TamingVQ(VQGAN, seed=1).state_dict()}, root / "chameleon" / "vqgan.ckpt")
    (root / "chameleon" / "vqgan.yaml").write_text(taming_yaml(VQGAN))

    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        name = list(COLOURS)[i % len(COLOURS)]
        pixels = np.full((20, 20, 3), 255, np.uint8)
        y, x = rng.integers(0, 10, 2)
        pixels[y:y + 10, x:x + 10] = COLOURS[name]
        PIL.Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
        rows.append({"image": f"{i:03d}.png", "caption": f"a {name} square"})
    (root / "images" / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    (root / "corpus").mkdir()
    docs = [{"text": f"The {c} square sits on a white page, number {i}."} for i, c in enumerate(COLOURS)] * 10
    (root / "corpus" / "part-0.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))


def test_readme_journey_with_relative_paths(tmp_path):
    user_inputs(tmp_path)
    outputs = [liquid_jax(line, tmp_path) for line in readme_journey()]

    card = json.loads((tmp_path / "liquid-7b" / "liquid_jax.json").read_text())
    assert card["config"]["num_image_codes"] == CODES and card["image"]["grids"] == [[8, 8]]
    assert sorted(os.listdir(tmp_path / "samples")) == [
        "000_0.png", "000_1.png", "000_2.png", "000_3.png", "codes.npy", "grid.png", "sample.json"]
    assert np.asarray(PIL.Image.open(tmp_path / "samples" / "000_0.png")).shape == (16, 16, 3)
    assert os.path.exists(tmp_path / "samples-run" / "grid.png")
    assert any(line.startswith("samples/000_0.png: ") for line in outputs)

    # The published model: transformers continues the prompt as `sample text` does.
    hf_config = json.loads((tmp_path / "liquid-7b-hf" / "config.json").read_text())
    assert hf_config["num_image_codes"] == CODES and hf_config["image_grids"] == [[8, 8]]
    prompt = "The red square sits"
    ours = liquid_jax(f'liquid-jax sample text --checkpoint liquid-7b-hf/ --prompt "{prompt}" '
                      "--max_new_tokens 12 --dtype float32", tmp_path)
    from liquid_jax.tokenizer.text import SentencePieceTokenizer

    sp = SentencePieceTokenizer(str(tmp_path / "liquid-7b-hf" / "tokenizer.model"))
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "liquid-7b-hf", dtype=torch.float32)
    ids = torch.tensor([[2] + sp.encode(prompt)])
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=1, pad_token_id=0)
    new = [t for t in greedy[0, ids.shape[1]:].tolist() if t != 1]
    assert ours.strip() == (prompt + sp.decode(new)).strip()

