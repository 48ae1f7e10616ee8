"""Tiny random Hugging Face decoders and their liquid_jax conversions, for sampling tests.

Weights are drawn with a larger spread than transformers' default initialisation so
that logits are well separated and greedy choices are not decided by rounding noise.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

from liquid_jax.convert.hf_mapping import config_from_hf, params_from_hf
from liquid_jax.model.transformer import from_params

TEXT_VOCAB = 96
IMAGE_CODES = 64


def tiny_hf_model(
    family: str,
    *,
    num_image_codes: int = 0,
    seed: int = 0,
    d_model: int = 64,
    layers: int = 2,
    max_positions: int = 256,
    weight_std: float = 0.25,
    embed_std: float | None = None,
) -> transformers.PreTrainedModel:
    """A random ``*ForCausalLM`` of ``family`` with vocabulary TEXT_VOCAB + num_image_codes."""
    common = dict(
        vocab_size=TEXT_VOCAB + num_image_codes,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=d_model // 4,
        max_position_embeddings=max_positions,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    if family == "gemma":
        config = transformers.GemmaConfig(**common, hidden_act="gelu_pytorch_tanh")
    elif family == "gemma2":
        config = transformers.Gemma2Config(
            **common, sliding_window=6, final_logit_softcapping=3.0,
            attn_logit_softcapping=5.0, query_pre_attn_scalar=16,
        )
    elif family == "llama":
        config = transformers.LlamaConfig(**common, tie_word_embeddings=False)
    elif family == "qwen2":
        config = transformers.Qwen2Config(**common, tie_word_embeddings=False)
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") and family.startswith("gemma"):
                p.normal_(0.0, 0.1)  # Gemma scales by (1 + w)
            elif name.endswith("norm.weight"):
                p.normal_(1.0, 0.1)
            elif "embed_tokens" in name and embed_std is not None:
                p.normal_(0.0, embed_std)
            else:
                p.normal_(0.0, weight_std)
    return model.eval()


def convert(hf_model: transformers.PreTrainedModel, num_image_codes: int = 0, **overrides):
    """Our Transformer holding the same weights as ``hf_model``."""
    config = config_from_hf(hf_model.config.to_dict(), num_image_codes=num_image_codes, **overrides)
    state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    return from_params(config, params_from_hf(config, state.__getitem__))


def random_prompts(lengths, seed: int = 0, low: int = 10, high: int = TEXT_VOCAB) -> list[list[int]]:
    """Token lists of the given lengths, starting with BOS (2)."""
    rng = np.random.default_rng(seed)
    return [[2] + rng.integers(low, high, n - 1).tolist() for n in lengths]


SPECIAL = dict(pad=0, eos=1, bos=2, boi=4, eoi=5, unconditional=6)
_WORDS = (
    "a red cat sits on the blue mat while green dogs run under yellow sun near old trees "
    "and small birds sing over quiet water what is in this image"
).split()


def tiny_vocab(directory, num_image_codes: int = IMAGE_CODES):
    """A MultimodalVocab over a freshly trained SentencePiece model (< TEXT_VOCAB pieces)
    with Gemma-style chat markers; ids follow SPECIAL."""
    import sentencepiece

    from liquid_jax.model.config import SpecialTokens
    from liquid_jax.tokenizer.text import SentencePieceTokenizer
    from liquid_jax.tokenizer.vocab import MultimodalVocab

    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(_WORDS, 8)) for _ in range(400)]
    path = f"{directory}/tokenizer.model"
    with open(path, "wb") as f:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=f, vocab_size=TEXT_VOCAB, model_type="unigram",
            pad_id=0, eos_id=1, bos_id=2, unk_id=3, hard_vocab_limit=False, minloglevel=2,
            user_defined_symbols=["<boi>", "<eoi>", "<unconditional>", "<start_of_turn>", "<end_of_turn>"],
        )
    return MultimodalVocab(SentencePieceTokenizer(path), SpecialTokens(**SPECIAL), TEXT_VOCAB, num_image_codes)


def convert_multimodal(hf_model, num_image_codes: int = IMAGE_CODES, **overrides):
    """``convert`` with the image vocabulary and SPECIAL token ids recorded in the config."""
    from liquid_jax.model.config import SpecialTokens

    return convert(hf_model, num_image_codes, special_tokens=SpecialTokens(**SPECIAL), **overrides)


def tiny_vqgan(num_image_codes: int = IMAGE_CODES, seed: int = 0):
    """A random VQGAN with downsampling factor 2 (an 8x8 image is a 4x4 grid).

    Weights are drawn with numpy into the abstract model: initialising every tensor
    with jax.random would compile one program per parameter shape."""
    import jax
    from flax import nnx

    from liquid_jax.model.vqgan import VQGAN
    from liquid_jax.model.vqgan_config import VQGANConfig

    config = VQGANConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, embed_dim=8,
                         num_image_codes=num_image_codes, resolution=8, num_groups=8)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: VQGAN(config, rngs=nnx.Rngs(seed))))
    rng = np.random.default_rng(seed)
    values = jax.tree.map(
        lambda a: np.asarray(rng.normal(0.0, 0.2, a.shape), a.dtype), nnx.to_pure_dict(state)
    )
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def tiny_checkpoints(directory, image_code_std: float | None = None) -> tuple[str, str]:
    """(Liquid checkpoint, VQGAN checkpoint) directories under ``directory``: a tiny Gemma
    with a Gemma-like SentencePiece tokenizer (chat markers included) extended by
    IMAGE_CODES codes, and ``tiny_vqgan``. The new code rows are the text rows' mean, as a
    conversion makes them (every code equally likely); ``image_code_std`` draws them at
    random instead, so that each prompt has one most likely image."""
    import os

    import sentencepiece

    from liquid_jax.checkpoint.vqgan import save_vqgan
    from liquid_jax.convert.hf import convert_hf_to_liquid

    hf_dir = os.path.join(directory, "hf")
    model = tiny_hf_model("gemma", embed_std=0.02, max_positions=512)
    model.save_pretrained(hf_dir)
    rng = np.random.default_rng(0)
    with open(os.path.join(hf_dir, "tokenizer.model"), "wb") as f:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter([" ".join(rng.choice(_WORDS, 8)) for _ in range(400)]),
            model_writer=f, vocab_size=TEXT_VOCAB, model_type="unigram", hard_vocab_limit=False,
            pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2,
            pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
            user_defined_symbols=["<unused0>", "<unused1>", "<unused2>", "<start_of_turn>", "<end_of_turn>"],
        )
    checkpoint = os.path.join(directory, "liquid")
    convert_hf_to_liquid(hf_dir, checkpoint, extend_image_codes=IMAGE_CODES, progress=False)
    if image_code_std is not None:
        from liquid_jax.checkpoint import model as model_checkpoint

        config, image, params = model_checkpoint.load_model(checkpoint)
        table = np.array(params["embed"]["embedding"])
        table[TEXT_VOCAB : TEXT_VOCAB + IMAGE_CODES] = rng.normal(0.0, image_code_std, (IMAGE_CODES, table.shape[1]))
        params["embed"]["embedding"] = table
        model_checkpoint.save_model(checkpoint, config, image, params, tokenizer=hf_dir, source="tiny test model",
                                 overwrite=True)
    vqgan = os.path.join(directory, "vqgan")
    save_vqgan(vqgan, tiny_vqgan())
    return checkpoint, vqgan
