"""Bidirectional attention over the paged KV cache that vLLM allocated.

Each model layer owns one `DiffusionAttention`. vLLM discovers it through the static forward
context (it is an `AttentionLayerBase`), asks it for a KV cache spec, allocates pages for it in
the shared KV buffer, and binds the layer's page view to `self.kv_cache`. The page layout is
ours and plain: one row per token slot holding [K | V] for this rank's KV heads, so any policy
may read or rewrite cached K/V by slot (CPU_ATTN's own K layout is ISA-specific and transposed,
DESIGN.md 2b). Slots come from the request's block table: slot = block_id * block_size + offset.

The attention math is torch's SDPA over the gathered keys of each request's canvas: queries are
any subset of the canvas (all of it under full recompute), keys are the whole canvas, no mask.
On CUDA, xformers' memory-efficient kernel takes over when it is installed (`_attend`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vllm.config import VllmConfig
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase
from vllm.v1.attention.backend import AttentionBackend, AttentionMetadataBuilder
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheSpec


@dataclass
class DiffusionBatch:
    """What every attention layer needs to know about this step's batch.

    Requests are laid out one after another in the flat token batch; request r owns query rows
    query_start_loc[r]:query_start_loc[r+1].
    """

    slot_mapping: torch.Tensor  # [T] KV slot of each query row (where its new K/V go)
    query_start_loc: list[int]  # [R+1]
    kv_slots: list[torch.Tensor]  # per request: slots of its whole canvas, position order


class DiffusionMetadataBuilder(AttentionMetadataBuilder):
    """vLLM builds one builder per attention group; our runner makes `DiffusionBatch` itself."""

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)

    def build(self, common_prefix_len, common_attn_metadata, fast_build=False):
        return None


class DiffusionAttentionBackend(AttentionBackend):
    supported_dtypes = [torch.float32, torch.float16, torch.bfloat16]
    forward_includes_kv_cache_update = True

    @staticmethod
    def get_name() -> str:
        return "VLLM_ELASTIC_DIFFUSION"

    @staticmethod
    def get_impl_cls():
        raise RuntimeError("DiffusionAttention computes attention itself; there is no impl")

    @staticmethod
    def get_builder_cls():
        return DiffusionMetadataBuilder

    @classmethod
    def supports_non_causal(cls) -> bool:
        return True


class DiffusionAttention(nn.Module, AttentionLayerBase):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, vllm_config: VllmConfig,
                 prefix: str) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.kv_size = num_kv_heads * head_dim
        self.layer_name = prefix
        self.dtype = vllm_config.model_config.dtype
        self.block_size = vllm_config.cache_config.block_size
        self.kv_cache = torch.tensor([])
        # Registering here is what makes vLLM allocate paged KV for this layer.
        context = vllm_config.compilation_config.static_forward_context
        if prefix in context:
            raise ValueError(f"duplicate attention layer name {prefix}")
        context[prefix] = self

    def get_attn_backend(self) -> type[AttentionBackend]:
        return DiffusionAttentionBackend

    def get_kv_cache_spec(self, vllm_config: VllmConfig) -> KVCacheSpec:
        # One "head slot" per token row holding [K | V] of all local KV heads: a plain layout.
        row_bytes = 2 * self.kv_size * self.dtype.itemsize
        return FullAttentionSpec(
            block_size=self.block_size, num_kv_heads=self.num_kv_heads, head_size=self.head_dim,
            dtype=self.dtype, non_causal=True, num_head_slots=1, state_content_bytes=row_bytes,
        )

    def token_rows(self) -> torch.Tensor:
        """This layer's pages as [num_slots, 2 * kv_size]: row = block_id * block_size + offset."""
        return self.kv_cache.view(-1, 2 * self.kv_size)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch = get_forward_context().attn_metadata
        if not isinstance(batch, DiffusionBatch):
            # vLLM's profiling/dummy runs: no pages, one bidirectional sequence.
            return self._attend(q, k, v)
        rows = self.token_rows()
        rows[batch.slot_mapping, : self.kv_size] = k
        rows[batch.slot_mapping, self.kv_size:] = v
        out = torch.empty_like(q)
        starts = batch.query_start_loc
        for r, slots in enumerate(batch.kv_slots):
            kv = rows[slots]
            s, e = starts[r], starts[r + 1]
            out[s:e] = self._attend(q[s:e], kv[:, : self.kv_size], kv[:, self.kv_size:])
        return out

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [n, Hq*D], k/v [L, Hkv*D] -> [n, Hq*D], every query sees every key."""
        n, length = q.shape[0], k.shape[0]
        qh = q.view(n, self.num_heads, self.head_dim).transpose(0, 1)
        kh = k.view(length, self.num_kv_heads, self.head_dim).transpose(0, 1)
        vh = v.view(length, self.num_kv_heads, self.head_dim).transpose(0, 1)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            kh, vh = kh.repeat_interleave(rep, 0), vh.repeat_interleave(rep, 0)
        if q.is_cuda and _xformers_attention is not None:
            out = _xformers_attention(qh.transpose(0, 1)[None], kh.transpose(0, 1)[None],
                                      vh.transpose(0, 1)[None])[0]
            return out.reshape(n, -1)
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=False)
        return out.transpose(0, 1).reshape(n, -1)


try:  # the CUDA fast path; absent on CPU machines
    from xformers.ops import memory_efficient_attention as _xformers_attention
except ImportError:  # pragma: no cover - depends on the machine
    _xformers_attention = None
