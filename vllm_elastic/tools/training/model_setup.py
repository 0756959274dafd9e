"""The trainer's model helpers: OLMo-style initialisation, the query/key rescale that undoes an
attention-entropy collapse, the entropy diagnostic itself, the optimizer and the tokenizer."""

from __future__ import annotations

import math

import torch

from vllm_elastic.oracles.llada import ReferenceLLaDA, rope_cos_sin


def init_weights(model: ReferenceLLaDA, seed: int) -> None:
    """OLMo-style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers)."""
    g = torch.Generator().manual_seed(seed)
    n_layers = model.config.n_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0) if "norm" in name or "ln_f" in name else p.zero_()
                continue
            std = 0.02
            if name.endswith("attn_out.weight") or ".ff_out.weight" in name and "blocks" in name:
                std = 0.02 / math.sqrt(2 * n_layers)
            p.copy_(torch.randn(p.shape, generator=g) * std)


def scale_qk(model: ReferenceLLaDA, scale: float) -> None:
    """Multiply every layer's query and key projections by `scale` (logits by scale**2)."""
    if scale == 1.0:
        return
    with torch.no_grad():
        for block in model.model.transformer["blocks"]:
            for proj in (block.q_proj, block.k_proj):
                proj.weight.mul_(scale)
                if proj.bias is not None:
                    proj.bias.mul_(scale)


@torch.no_grad()
def attention_entropy(model: ReferenceLLaDA, ids: torch.Tensor) -> list[float]:
    """Mean attention entropy (nats) per layer over every query of `ids` [B, L]: the collapse
    diagnostic (near 0 = one-hot attention, whose gradients vanish; log L = uniform)."""
    t = model.model.transformer
    cos, sin = rope_cos_sin(torch.arange(ids.shape[1]), model.config.head_dim,
                            model.config.rope_theta)
    x, out = t["wte"](ids), []
    for block in t["blocks"]:
        q, k, _ = block.qkv(x, cos, sin)
        probs = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
        out.append(round(float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()), 3))
        x = block(x, cos, sin)
    return out


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "wte" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def load_tokenizer(path: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(path)
