"""Bidirectional attention over the paged KV cache that vLLM allocated.

Each model layer owns one `DiffusionAttention`. vLLM discovers it through the static forward
context (it is an `AttentionLayerBase`), asks it for a KV cache spec, allocates pages for it in
the shared KV buffer, and binds the layer's page view to `self.kv_cache`. What a page row
holds is `PageLayout`'s business (page_layout.py); slots come from the request's block table:
slot = block_id * block_size + offset.

Per step and layer the forward reads its immutable `LayerContext` (kernels/step.py, set by
the step's executor) and is one straight line for the whole batch:
  1. if any request probes this layer, the drift test's "before" rows (cached Q against the
     cached K, before this step writes);
  2. one indexed write of this step's K, V (and Q) rows;
  3. one varlen attention call for every request (varlen.py): queries are any subset of each
     canvas, keys its whole canvas, no mask;
  4. if probed, the statistics of every probed request at once (statistics.py).
It returns (output, statistics or None); the executor hands the statistics to the policies.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from vllm.config import VllmConfig
from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase
from vllm.v1.attention.backend import AttentionBackend, AttentionMetadataBuilder
from vllm.model_executor.models.utils import extract_layer_index
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheSpec

from vllm_elastic.kernels.statistics import drift_rows_before, head_axis_similarity, layer_statistics
from vllm_elastic.kernels.page_layout import PageLayout
from vllm_elastic.kernels.step import AttentionStats, layer_context
from vllm_elastic.params import page_layout
from vllm_elastic.kernels.varlen import (flash_varlen_attention, torch_varlen_attention,
                                 xformers_varlen_attention)

__all__ = ["DiffusionAttention", "DiffusionAttentionBackend", "head_axis_similarity"]


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
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, hidden_size: int,
                 vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.page = PageLayout(page_layout(vllm_config.additional_config), num_heads,
                               num_kv_heads, head_dim, hidden_size)
        self.layer_name = prefix
        self.layer_index = extract_layer_index(prefix)
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
        # One "head slot" per token: a plain row as PageLayout describes it, for this rank.
        return FullAttentionSpec(
            block_size=self.block_size, num_kv_heads=self.num_kv_heads, head_size=self.head_dim,
            dtype=self.dtype, non_causal=True, num_head_slots=1,
            state_content_bytes=self.page.row_bytes(self.dtype),
        )

    def token_rows(self) -> torch.Tensor:
        """This layer's pages as [num_slots, row_size]: row = block_id * block_size + offset."""
        return self.kv_cache.view(-1, self.page.row_size)

    def write_hidden(self, slots: torch.Tensor, hidden: torch.Tensor) -> None:
        self.token_rows()[slots, self.page.h_cols] = hidden

    def read_hidden(self, slots: torch.Tensor) -> torch.Tensor:
        return self.page.gather(self.token_rows(), slots, self.page.h_cols)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                ) -> tuple[torch.Tensor, AttentionStats | None]:
        """(attention output, the statistics its context's probes ask for or None)."""
        context = layer_context(self.layer_name)
        if context is None:
            # vLLM's profiling/dummy runs: no pages, one bidirectional sequence.
            return self._dense(q, k, v), None
        pages, probes = self.token_rows(), context.probes
        before = drift_rows_before(pages, probes, self.page) if probes is not None else None
        self.page.write(pages, context.slot_mapping, k, v, q)
        kernel = _cuda_kernel() if q.is_cuda else "torch"
        if kernel == "flash":  # pragma: no cover - needs a GPU
            out = flash_varlen_attention(q, pages, context.varlen, self.page, self.block_size)
        elif kernel == "xformers":  # pragma: no cover - needs a GPU
            out = xformers_varlen_attention(q, pages, context.varlen, self.page)
        else:
            out = torch_varlen_attention(q, pages, context.varlen, self.page)
        if probes is None:
            return out, None
        return out, AttentionStats(*layer_statistics(pages, probes, self.page, before))

    def _dense(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [n, Hq*D], k/v [n, Hkv*D] -> [n, Hq*D], every query sees every key."""
        n, d = q.shape[0], self.head_dim
        qh = q.view(n, self.num_heads, d).transpose(0, 1)
        kh = k.view(n, self.num_kv_heads, d).transpose(0, 1)
        vh = v.view(n, self.num_kv_heads, d).transpose(0, 1)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            kh, vh = kh.repeat_interleave(rep, 0), vh.repeat_interleave(rep, 0)
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=False)
        return out.transpose(0, 1).reshape(n, -1)


@functools.cache
def _cuda_kernel() -> str:  # pragma: no cover - needs a GPU
    """The varlen kernel on CUDA, looked up once: vLLM's flash-attention, else xformers,
    else the torch kernel."""
    import importlib.util

    for module, name in (("vllm.vllm_flash_attn", "flash"), ("xformers.ops", "xformers")):
        try:
            if importlib.util.find_spec(module) is not None:
                return name
        except ModuleNotFoundError:
            pass
    return "torch"
