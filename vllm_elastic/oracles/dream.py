"""Plain-PyTorch Dream: the oracle the vLLM Dream model is tested against.

Qwen2 blocks (pre-norm RMSNorm, Q/K/V with biases, output projection without, grouped-query
attention, neox RoPE with the config's theta, SwiGLU MLP), attention fully bidirectional, an
untied LM head. The module tree mirrors the official weight names, so a safetensors file
loads as it is. `position_logits` applies Dream's logit shift: position q is predicted by the
output row q - 1 (position 0, always a prompt token, by its own row), as Dream's
`diffusion_generate` does after every forward. `reference.generate` decodes with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm_elastic.models.dream_config import DreamConfig
from vllm_elastic.oracles.llada import RMSNorm, apply_rope, load_safetensors_dir, rope_cos_sin


class DreamAttention(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = (cfg.num_attention_heads,
                                                        cfg.num_key_value_heads, hd)
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        q = self.q_proj(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # bidirectional
        return self.o_proj(att.transpose(1, 2).reshape(b, n, -1))


class DreamMLP(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamLayer(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DreamAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = DreamMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class ReferenceDream(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = nn.ModuleList(DreamLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L] -> output rows' logits [B, L, vocab] (not shifted)."""
        cos, sin = rope_cos_sin(torch.arange(input_ids.shape[1]), self.config.head_dim,
                                self.config.rope_theta)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.model.norm(x))

    def position_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits predicting each position: Dream's shift, row q - 1 for position q."""
        logits = self(input_ids)
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32) -> "ReferenceDream":
        model = cls(DreamConfig.from_pretrained(path))
        model.load_state_dict({k: v.to(dtype) for k, v in load_safetensors_dir(path).items()})
        return model.to(dtype).eval()
