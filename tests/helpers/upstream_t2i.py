"""Upstream Liquid's text-to-image sampling loop, written with torch and transformers.

The reference for the guided sampler's parity test and for benchmarks/sample_throughput.py.
"""

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper


@torch.no_grad()
def upstream_t2i(hf_model, rows, steps, text_vocab, guidance_scale, temperature, top_k, top_p, seed=0, pad_id=0):
    """Image codes [len(rows) / 2, steps] by upstream's loop.

    ``rows``: conditional then unconditional prompts (token lists), left padded into one
    batch with a KV cache; per step the full-vocabulary logits of the last position,
    u + guidance_scale * (c - u), temperature, every text token (< text_vocab) masked, top-k,
    top-p, one sample per pair appended to both rows. Positions count from each row's
    first real token."""
    width = max(map(len, rows))
    device = hf_model.device
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=hf_model.config)
    generator = torch.Generator(device=device).manual_seed(seed)
    warpers = [TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)]
    chosen = []
    out = hf_model(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache, use_cache=True)
    for step in range(steps):
        logits = out.logits[:, -1, :].float()
        cond, uncond = logits.split(len(rows) // 2)
        guided = uncond + guidance_scale * (cond - uncond)
        guided = guided / temperature
        guided[:, :text_vocab] = -float("inf")
        for w in warpers:
            guided = w(None, guided)
        token = torch.multinomial(torch.softmax(guided, -1), 1, generator=generator)
        chosen.append(token[:, 0])
        if step + 1 == steps:
            break
        next_ids = torch.cat([token, token])
        mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
        position_ids = position_ids[:, -1:] + 1
        out = hf_model(input_ids=next_ids, attention_mask=mask, position_ids=position_ids,
                       past_key_values=cache, use_cache=True)
    return torch.stack(chosen, 1).cpu().numpy() - text_vocab
