"""Bidirectional attention over the paged KV cache that vLLM allocated.

Each model layer owns one `DiffusionAttention`. vLLM discovers it through the static forward
context (it is an `AttentionLayerBase`), asks it for a KV cache spec, allocates pages for it in
the shared KV buffer, and binds the layer's page view to `self.kv_cache`. The page layout is
ours and plain: one row per token slot holding [K | V | Q | H]: this rank's K and V heads, its
Q heads (after RoPE) and the layer's input hidden state, so cache policies can read or rewrite
any of them by slot (CPU_ATTN's own K layout is ISA-specific and transposed, DESIGN.md 2b).
A server started with page_layout "kv" keeps [K | V] only: half the memory, no elastic.
Slots come from the request's block table: slot = block_id * block_size + offset.

The attention math is torch's SDPA over the gathered keys of each request's canvas: queries are
any subset of the canvas (all of it under full recompute), keys are the whole canvas, no mask.
On CUDA, xformers' memory-efficient kernel takes over when it is installed (`_attend`).
When a request's policy asks (`Probe`), the layer also computes attention statistics for it:
the drift similarity of tracked tokens and the window rows' attention mass (Elastic-Cache),
summed across tensor-parallel ranks so every rank takes the same decision.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vllm.config import VllmConfig
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase
from vllm.v1.attention.backend import AttentionBackend, AttentionMetadataBuilder
from vllm.distributed import get_tensor_model_parallel_world_size, tensor_model_parallel_all_reduce
from vllm.model_executor.models.utils import extract_layer_index
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheSpec

from vllm_elastic.batch import DiffusionBatch, RequestPass
from vllm_elastic.cache import LayerStats, Probe
from vllm_elastic.params import page_layout


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
        self.kv_size, self.q_size, self.hidden_size = num_kv_heads * head_dim, num_heads * head_dim, hidden_size
        # Row layout: [K | V | Q | H] (page_layout "full"), or [K | V] ("kv": half the memory,
        # for servers that never run elastic, the one policy reading Q and H back).
        self.stores_q_and_inputs = page_layout(vllm_config.additional_config) == "full"
        self.q_col = 2 * self.kv_size
        self.h_col = self.q_col + (self.q_size if self.stores_q_and_inputs else 0)
        self.row_size = self.h_col + (hidden_size if self.stores_q_and_inputs else 0)
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
        # One "head slot" per token: a plain row of [K | V | Q | H] (or [K | V]) for this rank.
        row_bytes = self.row_size * self.dtype.itemsize
        return FullAttentionSpec(
            block_size=self.block_size, num_kv_heads=self.num_kv_heads, head_size=self.head_dim,
            dtype=self.dtype, non_causal=True, num_head_slots=1, state_content_bytes=row_bytes,
        )

    def token_rows(self) -> torch.Tensor:
        """This layer's pages as [num_slots, row_size]: row = block_id * block_size + offset."""
        return self.kv_cache.view(-1, self.row_size)

    def write_hidden(self, slots: torch.Tensor, hidden: torch.Tensor) -> None:
        self.token_rows()[slots, self.h_col:] = hidden

    def read_hidden(self, slots: torch.Tensor) -> torch.Tensor:
        return self.token_rows()[slots, self.h_col:]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch = get_forward_context().attn_metadata
        if not isinstance(batch, DiffusionBatch):
            # vLLM's profiling/dummy runs: no pages, one bidirectional sequence.
            return self._attend(q, k, v)
        rows = self.token_rows()
        probes = [p.policy.probe(self.layer_index) for p in batch.passes]
        # The drift test compares with K and Q as the cache held them before this step.
        before = [self._snapshot(rows, p, probe) for p, probe in zip(batch.passes, probes)]
        slots = batch.slot_mapping
        rows[slots, : self.kv_size] = k
        rows[slots, self.kv_size: self.q_col] = v
        if self.stores_q_and_inputs:
            rows[slots, self.q_col: self.h_col] = q
        out = torch.empty_like(q)
        for r, p in enumerate(batch.passes):
            kv = rows[p.slots]
            keys, values = kv[:, : self.kv_size], kv[:, self.kv_size: self.q_col]
            s, e = batch.query_start_loc[r], batch.query_start_loc[r + 1]
            out[s:e] = self._attend(q[s:e], keys, values)
            if probes[r] is not None:
                p.policy.observe(self.layer_index,
                                 self._stats(rows, p, probes[r], keys, before[r]))
        return out

    def _snapshot(self, rows: torch.Tensor, p: RequestPass, probe: Probe | None):
        """The tracked tokens' attention weights from the cache as it stands before this step
        writes its rows (computed now, so nothing needs copying)."""
        if probe is None or probe.tracked.numel() == 0:
            return None
        return self._probs(rows[p.slots[probe.tracked], self.q_col: self.h_col],
                           rows[p.slots, : self.kv_size])

    def _stats(self, rows, p: RequestPass, probe: Probe, keys, before) -> LayerStats:
        similarity = mass = None
        if before is not None:
            new = self._probs(rows[p.slots[probe.tracked], self.q_col: self.h_col], keys)
            similarity = head_axis_similarity(new, before, min_weight=probe.min_weight)
        if probe.window.numel():
            window_q = rows[p.slots[probe.window], self.q_col: self.h_col]
            mass = _tp_sum(self._probs(window_q, keys).sum(dim=(0, 1)))
        return LayerStats(similarity=similarity, attention_mass=mass)

    def _probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Attention weights [heads, n, L] of queries q [n, Hq*D] over keys k [L, Hkv*D]."""
        qh = q.float().view(q.shape[0], self.num_heads, self.head_dim).transpose(0, 1)
        kh = k.float().view(k.shape[0], self.num_kv_heads, self.head_dim).transpose(0, 1)
        if self.num_kv_heads != self.num_heads:
            kh = kh.repeat_interleave(self.num_heads // self.num_kv_heads, 0)
        return torch.softmax(qh @ kh.transpose(1, 2) * self.head_dim ** -0.5, dim=-1)

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


_COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default eps


def _tp_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a per-rank statistic over tensor-parallel ranks (heads are split across them)."""
    if get_tensor_model_parallel_world_size() > 1:
        return tensor_model_parallel_all_reduce(t.contiguous())
    return t


def head_axis_similarity(new: torch.Tensor, old: torch.Tensor, min_weight: float = 0.0,
                         reduce: Callable[[torch.Tensor], torch.Tensor] = _tp_sum) -> float:
    """Elastic-Cache's drift statistic: cosine similarity of attention weights [heads, n, L]
    along the head axis, averaged over tracked tokens x keys (as the authors' code takes it).

    The sums over heads are added across TP ranks first, so every rank decides alike. Each norm
    is clamped on its own, as torch's F.cosine_similarity does: clamping their product instead
    scores every key whose weights are below ~1e-4 as cosine 0, which on a sharply attending
    model drags the mean far below gamma at every layer (our first version did that).
    `min_weight` > 0 (beyond the paper) averages only over keys whose weight norm over heads
    reaches it in the old or the new row. `reduce` sums over tensor-parallel ranks.
    """
    parts = reduce(torch.stack([(new * old).sum(0), (new * new).sum(0), (old * old).sum(0)]))
    new_norm, old_norm = parts[1].sqrt(), parts[2].sqrt()
    cos = parts[0] / (new_norm.clamp_min(_COS_EPS) * old_norm.clamp_min(_COS_EPS))
    if min_weight > 0:
        kept = (new_norm >= min_weight) | (old_norm >= min_weight)
        return float(cos[kept].mean()) if bool(kept.any()) else 1.0
    return float(cos.mean())


try:  # the CUDA fast path; absent on CPU machines
    from xformers.ops import memory_efficient_attention as _xformers_attention
except ImportError:  # pragma: no cover - depends on the machine
    _xformers_attention = None
