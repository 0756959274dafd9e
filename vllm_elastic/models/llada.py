"""LLaDA (masked diffusion LM) in vLLM style: parallel layers, bidirectional paged attention.

Same math as `vllm_elastic.oracles.llada.ReferenceLLaDA` (pre-norm Llama blocks, neox RoPE, SwiGLU,
RMSNorm) but built from vLLM's tensor-parallel layers so `--tensor-parallel-size N` shards
heads and MLP, and attention reads/writes the paged KV cache through `DiffusionAttention`.
`load_weights` takes the official checkpoint names (`model.transformer.blocks.{i}.q_proj`, ...)
and those of the Llama-named rename (`model.layers.{i}.self_attn.q_proj`, ...).
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
from vllm_elastic.models.llama_names import olmo_name
from vllm_elastic.models.stack import GatedMLP, LayerOutput, LayerStack, add_feed_forward
from vllm_elastic.models.weights import load_mapped_weights


class LLaDAAttention(nn.Module):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.head_dim = config.head_dim
        self.num_heads = config.n_heads // tp
        self.num_kv_heads = max(1, config.n_kv_heads // tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        bias = config.include_bias or config.include_qkv_bias
        self.qkv_proj = QKVParallelLinear(config.d_model, self.head_dim, config.n_heads,
                                          config.n_kv_heads, bias=bias, prefix=f"{prefix}.qkv_proj")
        self.attn_out = RowParallelLinear(config.n_heads * self.head_dim, config.d_model,
                                          bias=config.include_bias, prefix=f"{prefix}.attn_out")
        self.rotary_emb = get_rope(
            self.head_dim, max_position=config.max_sequence_length, is_neox_style=True,
            rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        )
        self.attn = DiffusionAttention(self.num_heads, self.num_kv_heads, self.head_dim,
                                       config.d_model, vllm_config, prefix=f"{prefix}.attn")

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor) -> LayerOutput:
        qkv, _ = self.qkv_proj(hidden)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        attended, stats = self.attn(q, k, v)
        out, _ = self.attn_out(attended)
        return out, stats


class LLaDABlock(nn.Module):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.attention = LLaDAAttention(config, vllm_config, prefix=f"{prefix}.attention")
        self.ff_norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.mlp = GatedMLP(config.d_model, config.mlp_hidden_size, config.include_bias,
                            prefix=f"{prefix}.mlp")

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> LayerOutput:
        attended, stats = self.attention(positions, self.attn_norm(x))
        return add_feed_forward(x + attended, self.ff_norm, self.mlp), stats


class LLaDAModel(LayerStack):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.wte = VocabParallelEmbedding(config.embedding_size, config.d_model)
        self.blocks = nn.ModuleList(
            LLaDABlock(config, vllm_config, prefix=f"{prefix}.blocks.{i}")
            for i in range(config.n_layers)
        )
        self.ln_f = RMSNorm(config.d_model, eps=config.rms_norm_eps)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.wte(input_ids)

    def block_list(self) -> nn.ModuleList:
        return self.blocks

    def attention_of(self, layer: int) -> DiffusionAttention:
        return self.blocks[layer].attention.attn

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_f(x)


# Official name -> (our parameter name, shard id of a fused layer or None).
_BLOCK_WEIGHTS = {
    "q_proj": ("attention.qkv_proj", "q"),
    "k_proj": ("attention.qkv_proj", "k"),
    "v_proj": ("attention.qkv_proj", "v"),
    "attn_out": ("attention.attn_out", None),
    "ff_proj": ("mlp.gate_up_proj", 0),
    "up_proj": ("mlp.gate_up_proj", 1),
    "ff_out": ("mlp.down_proj", None),
    "attn_norm": ("attn_norm", None),
    "ff_norm": ("ff_norm", None),
}
_BLOCK_RE = re.compile(r"^model\.transformer\.blocks\.(\d+)\.(\w+)\.(weight|bias)$")


def map_checkpoint_name(name: str) -> tuple[str | None, str | int | None]:
    """Official LLaDA weight name -> (our parameter name, shard id); (None, None) to skip."""
    if m := _BLOCK_RE.match(name):
        layer, module, kind = m.groups()
        if module not in _BLOCK_WEIGHTS:
            return None, None
        ours, shard = _BLOCK_WEIGHTS[module]
        return f"model.blocks.{layer}.{ours}.{kind}", shard
    fixed = {
        "model.transformer.wte.weight": "model.wte.weight",
        "model.transformer.ln_f.weight": "model.ln_f.weight",
        "model.transformer.ff_out.weight": "lm_head.weight",
    }
    return fixed.get(name), None


def map_any_checkpoint_name(name: str) -> tuple[str | None, str | int | None]:
    """`map_checkpoint_name` for the official names or the Llama-named rename's."""
    return map_checkpoint_name(olmo_name(name) or name)


class LLaDAModelLM(nn.Module):
    """The architecture named in LLaDA checkpoints' config.json."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        self.config = vllm_config.model_config.hf_config
        lm = self.lm_config(self.config)
        self.model = LLaDAModel(lm, vllm_config, prefix="model")
        self.lm_head = ParallelLMHead(lm.embedding_size, lm.d_model)
        if lm.weight_tying:
            self.lm_head = self.lm_head.tie_weights(self.model.wte)
        self.logits_processor = LogitsProcessor(lm.embedding_size, org_vocab_size=lm.vocab_size)

    @staticmethod
    def lm_config(config):
        """The LM's config under LLaDA's field names (a family around a LLaDA LM, such as
        LLaDA-V, translates its own)."""
        return config

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.wte(input_ids)

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
        # Official OLMo-style names, or the Llama-named rename (LLaDA-8B-Instruct-HF, what
        # LLaDA-V was trained from): the same tensors under other names.
        return load_mapped_weights(self, weights, map_any_checkpoint_name)
