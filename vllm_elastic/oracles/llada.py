"""Plain-PyTorch LLaDA and its `generate`: the oracle every vLLM path is tested against.

No vLLM, no cache. The module tree mirrors the official checkpoint's weight names
(`model.transformer.blocks.{i}.q_proj`, ...), so `load_state_dict` takes a safetensors file
as it is. The same module is what `training/` trains.

`generate` follows LLaDA's `generate()` (docs/DECODING.md section 1) written the way the
official code is: the whole canvas through the model every step; with `schedule="window"` it
follows Elastic-Cache's sliding-window schedule, and with `schedule="dream"` Dream's
diffusion_generate, still with no cache (the `none` policy's oracle). It decodes LLaDA and
Dream models alike through their `position_logits`.
Two definitions are ours, and the vLLM path follows them too:
  * the MASK token's logit is excluded (-inf) before sampling and confidence, so a position can
    never "commit" the MASK id (LLaDA's code allows it; trained models never pick it);
  * randomness comes from one torch.Generator per request seeded with the request's seed:
    each step draws float64 uniforms for the Gumbel noise of the rows being decoded (the
    block's or the window's, [rows, vocab]) when temperature > 0, then, with `random`
    remasking, one float64 uniform per row. Ties in confidence go to the lower position.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from vllm_elastic.decoding.sampling import sample_and_score, transfer_schedule
from vllm_elastic.models.llada_config import LLaDAConfig
from vllm_elastic.params import DiffusionParams


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, ...]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [..., L, D]; neox-style rotation of the two halves (as OLMo/LLaDA do)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        d, hd, bias = cfg.d_model, cfg.head_dim, cfg.include_bias or cfg.include_qkv_bias
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=bias)
        self.attn_out = nn.Linear(cfg.n_heads * hd, d, bias=cfg.include_bias)
        self.ff_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=cfg.include_bias)
        self.up_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=cfg.include_bias)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, d, bias=cfg.include_bias)
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x, cos, sin)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # bidirectional
        return self.after_attention(x, att)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Q, K, V [B, heads, n, D] of the layer input x [B, n, d]; K/V repeated to every query
        head, Q and K after RoPE."""
        b, n, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return q, k, v

    def after_attention(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """The residual, output projection and MLP around the attention output [B, heads, n, D]."""
        b, n, _ = x.shape
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, n, -1))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class ReferenceLLaDA(nn.Module):
    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        self.config = cfg
        transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg.embedding_size, cfg.d_model),
            "blocks": nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.n_layers)),
            "ln_f": RMSNorm(cfg.d_model, cfg.rms_norm_eps),
        })
        if not cfg.weight_tying:
            transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)
        self.model = nn.Module()
        self.model.transformer = transformer

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L] -> logits [B, L, embedding_size], attention over the whole canvas."""
        return self.forward_embeds(self.model.transformer["wte"](input_ids))

    def forward_embeds(self, x: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, L, d] -> logits (LLaDA-V splices image features into them)."""
        t = self.model.transformer
        cos, sin = rope_cos_sin(torch.arange(x.shape[1]), self.config.head_dim,
                                self.config.rope_theta)
        for block in t["blocks"]:
            x = block(x, cos, sin)
        x = t["ln_f"](x)
        head = t["wte"].weight if self.config.weight_tying else t["ff_out"].weight
        return F.linear(x, head)

    def position_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits predicting each position: LLaDA reads row q for position q (no shift)."""
        return self(input_ids)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32) -> "ReferenceLLaDA":
        model = cls(LLaDAConfig.from_pretrained(path))
        model.load_state_dict({k: v.to(dtype) for k, v in load_safetensors_dir(path).items()})
        return model.to(dtype).eval()


def load_safetensors_dir(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of every *.safetensors file in a checkpoint folder."""
    from safetensors.torch import load_file

    state = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            state.update(load_file(os.path.join(path, name)))
    return state


@torch.no_grad()
def generate(
    model: nn.Module, prompt_ids: list[int], params: DiffusionParams,
) -> list[int]:
    """Decode one prompt with no cache; returns the gen_length canvas tokens (not cut at EOS).
    `model` is a ReferenceLLaDA or a ReferenceDream (reference_dream.py): both give
    `position_logits`, the logits that predict each canvas position."""
    params.validate()
    gen = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
    x = torch.tensor([prompt_ids + [model.config.mask_token_id] * params.gen_length])
    if params.schedule == "window":
        _generate_window(model, x, len(prompt_ids), params, gen)
    elif params.schedule == "dream":
        _generate_dream(model, x, params, gen)
    else:
        _generate_blocks(model, x, len(prompt_ids), params, gen)
    return x[0, len(prompt_ids):].tolist()


def _sample(model, logits, params, gen):
    # The sampling convention (MASK excluded, float64, noise order) is shared with the worker.
    return sample_and_score(logits, params, model.config.mask_token_id, gen)


def _generate_blocks(model, x, p_len, params, gen) -> None:
    """LLaDA's generate: blocks left to right, top-k split of the steps (or Fast-dLLM's
    threshold) inside each block."""
    mask_id, blk = model.config.mask_token_id, params.block_length
    for b in range(params.num_blocks):
        lo, hi = p_len + b * blk, p_len + (b + 1) * blk
        schedule = transfer_schedule(int((x[0, lo:hi] == mask_id).sum()), params.steps_per_block)
        step = 0
        while bool((x[0, lo:hi] == mask_id).any()):
            x0, conf = _sample(model, model.position_logits(x)[0, lo:hi], params, gen)
            masked = x[0, lo:hi] == mask_id
            conf = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
            order = torch.sort(conf, descending=True, stable=True).indices
            if params.threshold is not None:
                chosen = [int(order[0])] + [int(i) for i in order[1:]
                                            if masked[i] and conf[i] > params.threshold]
            else:
                chosen = [int(i) for i in order[: schedule[step]]]
            for i in chosen:
                x[0, lo + i] = x0[i]
            step += 1


def _generate_window(model, x, p_len, params, gen) -> None:
    """Elastic-Cache's schedule without a cache: each step decode the window_length leftmost
    masked positions; commit those with confidence >= min(threshold, max confidence), or the
    top tokens_per_iter. At the first step that commits an EOS, masks after the first EOS are
    dropped (once, as the authors' code does)."""
    mask_id, eos_id = model.config.mask_token_id, model.config.eos_token_id
    limit = x.shape[1]
    while True:
        masked = [p for p in range(p_len, limit) if int(x[0, p]) == mask_id]
        if not masked:
            return
        window = masked[: params.window_length]
        x0, conf = _sample(model, model.position_logits(x)[0, window], params, gen)
        order = sorted(range(len(window)), key=lambda i: (-float(conf[i]), i))
        if params.threshold is None:
            chosen = order[: params.tokens_per_iter]
        else:
            bar = min(params.threshold, float(conf[order[0]]))
            chosen = [i for i in order if float(conf[i]) >= bar]
        for i in chosen:
            x[0, window[i]] = x0[i]
        if limit == x.shape[1]:  # cut once, at the first step that commits an EOS
            eos = [p for p in range(p_len, x.shape[1]) if int(x[0, p]) == eos_id]
            if eos:
                limit = eos[0] + 1


def _generate_dream(model, x, params, gen) -> None:
    """Dream's diffusion_generate: `steps` steps over the whole canvas; each step every masked
    position is a candidate and dream_sampling.dream_step decides (no early stop: a step with
    nothing left to decode changes nothing)."""
    from vllm_elastic.decoding.dream_sampling import dream_step

    mask_id = model.config.mask_token_id
    for i in range(params.num_steps):
        masked = (x[0] == mask_id).nonzero()[:, 0]
        if masked.numel() == 0:
            return
        logits = model.position_logits(x)[0, masked]
        chosen, x0 = dream_step(logits, params, i, mask_id, gen)
        x[0, masked[chosen]] = x0[chosen]


def cut_at_eos(token_ids: list[int], eos_token_id: int) -> list[int]:
    """The answer a user receives: the canvas up to and including the first EOS."""
    return token_ids[: token_ids.index(eos_token_id) + 1] if eos_token_id in token_ids else token_ids
