"""Dream (Dream-v0, DiffuCoder, Dream-Coder) in vLLM style: Qwen2 blocks, bidirectional paged
attention, shifted logits.

The checkpoint is Qwen2.5's layout and names (`model.layers.{i}.self_attn.q_proj` with a bias,
`o_proj` without, SwiGLU `gate/up/down_proj`, `input_layernorm`, `post_attention_layernorm`,
`model.norm`, an untied `lm_head`) with grouped-query attention; the attention is fully
bidirectional. The logit shift (position q predicted by the output row q - 1) is not the
model's business: the canvas reads the shifted rows (`Canvas.logit_rows`) and the cache
policies keep those rows computed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)

from vllm_elastic.kernels.attention import DiffusionAttention
from vllm_elastic.models.stack import GatedMLP, LayerOutput, LayerStack, add_feed_forward
from vllm_elastic.models.weights import load_mapped_weights


class DreamAttention(nn.Module):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads // tp
        self.num_kv_heads = max(1, config.num_key_value_heads // tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim,
                                          config.num_attention_heads, config.num_key_value_heads,
                                          bias=True, prefix=f"{prefix}.qkv_proj")
        self.o_proj = RowParallelLinear(config.num_attention_heads * self.head_dim,
                                        config.hidden_size, bias=False, prefix=f"{prefix}.o_proj")
        self.rotary_emb = get_rope(
            self.head_dim, max_position=config.max_position_embeddings, is_neox_style=True,
            rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        )
        self.attn = DiffusionAttention(self.num_heads, self.num_kv_heads, self.head_dim,
                                       config.hidden_size, vllm_config, prefix=f"{prefix}.attn")

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor) -> LayerOutput:
        qkv, _ = self.qkv_proj(hidden)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        attended, stats = self.attn(q, k, v)
        out, _ = self.o_proj(attended)
        return out, stats


class DreamDecoderLayer(nn.Module):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = DreamAttention(config, vllm_config, prefix=f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, bias=False,
                            prefix=f"{prefix}.mlp")

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> LayerOutput:
        attended, stats = self.self_attn(positions, self.input_layernorm(x))
        return add_feed_forward(x + attended, self.post_attention_layernorm, self.mlp), stats


class DreamBaseModel(LayerStack):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DreamDecoderLayer(config, vllm_config, prefix=f"{prefix}.layers.{i}")
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def block_list(self) -> nn.ModuleList:
        return self.layers

    def attention_of(self, layer: int) -> DiffusionAttention:
        return self.layers[layer].self_attn.attn

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.(weight|bias)$")
# Official projection name -> (our module, shard id of a fused layer or None).
_PROJECTIONS = {
    "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
    "o_proj": ("o_proj", None), "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    "down_proj": ("down_proj", None),
}


def map_checkpoint_name(name: str) -> tuple[str | None, str | int | None]:
    """Official Dream weight name -> (our parameter name, shard id); (None, None) to skip."""
    if m := _LAYER_RE.match(name):
        layer, group, proj, kind = m.groups()
        if proj not in _PROJECTIONS:
            return None, None
        ours, shard = _PROJECTIONS[proj]
        return f"model.layers.{layer}.{group}.{ours}.{kind}", shard
    # embed_tokens, norms and lm_head keep their names.
    return name, None


class DreamModel(nn.Module):
    """The architecture named in Dream checkpoints' config.json (`DreamModel`)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.model = DreamBaseModel(config, vllm_config, prefix="model")
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size)
        if config.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def layer_stack(self) -> LayerStack:
        """What the step's executor drives (engine/executor.py)."""
        return self.model

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                intermediate_tensors=None, inputs_embeds=None) -> torch.Tensor:
        return self.model(input_ids, positions, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits on every TP rank (vLLM all-gathers them on CPU)."""
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return load_mapped_weights(self, weights, map_checkpoint_name)
