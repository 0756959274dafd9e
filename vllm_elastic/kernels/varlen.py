"""Bidirectional attention for a whole step's batch in one call per layer (varlen, paged).

A step's batch holds R requests; request r runs a subset of its canvas as queries (all of it
under full recompute, a window under a cache) and attends, with no mask, to every position of
its own canvas, whose K/V sit in the pages at `slots[r]`. `VarlenLayout` is what every kernel
needs to know about that batch, built once per layer layout by `build_layout` (plain CPU code,
tested): the query offsets (`query_start_loc`, vLLM's and flash-attention's `cu_seqlens_q`),
the key lengths (`seq_lens`, flash's `seqused_k`), the block table, and for the torch kernel
the padded key slots and the request groups it computes together.

Kernels behind one signature `(q, pages, layout, page_layout) -> out`:
  * `torch_varlen_attention` (CPU, and any device without flash-attention): gathers the
    step's K/V rows from the pages in one indexed read per group and runs one SDPA call per
    group of requests of similar size, a boolean mask hiding padded keys. Groups exist
    only to bound memory and padding; a typical step is one group. Measured against vLLM's own
    CPU paged kernel and a per-request SDPA loop in benchmarks/bench_attention.py.
  * `flash_varlen_attention` (CUDA): vLLM's flash-attention varlen kernel with the block
    table and causal=False, reading K/V in place from the pages (a strided view of the plain
    rows); `xformers_varlen_attention` (CUDA without vLLM's flash-attention): xformers'
    memory-efficient kernel with a block-diagonal mask over the gathered canvases. Their
    metadata is `VarlenLayout`, covered by the CPU tests; the kernel calls themselves cannot
    run on this project's CPU-only machines and are untested.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vllm_elastic.kernels.page_layout import PageLayout

# Score elements (group x heads x queries x keys) a torch group may hold: 16M floats = 64 MiB.
MAX_GROUP_SCORES = 1 << 24
# A request joins a group while the group's padded work stays within this factor of its real
# work (query rows x keys) and the padding adds at most MAX_WASTE_SCORES score elements (x
# heads): about what one more SDPA call costs on CPU. Large requests (a full canvas) thus go
# alone unless their sizes match: padding them would cost more than the call it saves (a
# batch of 16 full-recompute canvases of mixed lengths lost ~15% of its attention time to
# padding and the query scatter, benchmarks/results/batching_long.md).
MAX_PADDING = 1.5
MAX_WASTE_SCORES = 1 << 16


@dataclass
class Group:
    """Requests the torch kernel computes in one batched call."""

    members: torch.Tensor  # request indices
    max_queries: int
    max_keys: int
    key_slots: torch.Tensor  # [n, max_keys] page slots (padding: each request's slot 0)
    key_valid: torch.Tensor  # [n, max_keys] bool
    query_rows: torch.Tensor  # flat query rows of the members, in order
    query_dst: torch.Tensor  # their places in the padded [n * max_queries] query block
    keys_padded: bool  # some member has fewer keys than max_keys (SDPA then needs a mask)
    queries_padded: bool  # some member has fewer queries than max_queries
    query_span: tuple[int, int] | None  # (start, stop) when query_rows is one contiguous range


@dataclass
class VarlenLayout:
    query_start_loc: torch.Tensor  # int32 [R + 1]
    seq_lens: torch.Tensor  # int32 [R] canvas lengths (keys)
    block_table: torch.Tensor  # int32 [R, max_blocks] (padding 0)
    max_query_len: int
    max_seq_len: int
    groups: list[Group]
    key_slots: torch.Tensor  # every request's canvas slots, concatenated in request order

    @property
    def num_requests(self) -> int:
        return self.seq_lens.numel()


def build_layout(query_counts: list[int], slots: list[torch.Tensor], block_size: int,
                 heads: int = 1) -> VarlenLayout:
    """The layout of a batch whose request r has query_counts[r] query rows (flat, in request
    order) and canvas page slots slots[r] (position -> slot)."""
    qsl = torch.zeros(len(slots) + 1, dtype=torch.int32)
    qsl[1:] = torch.tensor(query_counts, dtype=torch.int32).cumsum(0)
    seq_lens = torch.tensor([s.numel() for s in slots], dtype=torch.int32)
    max_blocks = max(-(-s.numel() // block_size) for s in slots)
    table = torch.zeros(len(slots), max_blocks, dtype=torch.int32)
    for r, s in enumerate(slots):
        blocks = s[::block_size] // block_size
        table[r, : blocks.numel()] = blocks.to(torch.int32)
    groups = [_group(m, qsl, slots) for m in _plan_groups(query_counts, seq_lens.tolist(), heads)]
    return VarlenLayout(qsl, seq_lens, table, max(query_counts), int(seq_lens.max()), groups,
                        torch.cat(slots))


def _plan_groups(query_counts: list[int], seq_lens: list[int], heads: int) -> list[list[int]]:
    """Requests in groups of similar size: sorted by (keys, queries), a request joins the
    current group while memory and padding stay bounded."""
    order = sorted(range(len(seq_lens)), key=lambda r: (seq_lens[r], query_counts[r]))
    groups: list[list[int]] = []
    current: list[int] = []
    for r in order:
        if query_counts[r] == 0:
            continue
        trial = current + [r]
        q_max = max(query_counts[i] for i in trial)
        k_max = max(seq_lens[i] for i in trial)
        padded = len(trial) * q_max * k_max
        real = sum(query_counts[i] * seq_lens[i] for i in trial)
        if current and (padded * heads > MAX_GROUP_SCORES or padded > MAX_PADDING * real
                        or (padded - real) * heads > MAX_WASTE_SCORES):
            groups.append(current)
            trial = [r]
        current = trial
    if current:
        groups.append(current)
    return groups


def _group(members: list[int], qsl: torch.Tensor, slots: list[torch.Tensor]) -> Group:
    q_counts = [int(qsl[r + 1] - qsl[r]) for r in members]
    max_q, max_k = max(q_counts), max(slots[r].numel() for r in members)
    key_slots = torch.stack([torch.cat([slots[r], slots[r][:1].expand(max_k - slots[r].numel())])
                             for r in members])
    key_valid = torch.arange(max_k)[None, :] < torch.tensor(
        [slots[r].numel() for r in members])[:, None]
    rows = torch.cat([torch.arange(int(qsl[r]), int(qsl[r + 1])) for r in members])
    dst = torch.cat([j * max_q + torch.arange(n) for j, n in enumerate(q_counts)])
    contiguous = rows.numel() > 0 and bool((rows.diff() == 1).all())
    span = (int(rows[0]), int(rows[-1]) + 1) if contiguous else None
    return Group(torch.tensor(members), max_q, max_k, key_slots, key_valid, rows, dst,
                 keys_padded=not bool(key_valid.all()), queries_padded=min(q_counts) < max_q,
                 query_span=span)


def torch_varlen_attention(q: torch.Tensor, pages: torch.Tensor, layout: VarlenLayout,
                           page: PageLayout) -> torch.Tensor:
    """q [N, heads*D] (flat, request order) -> [N, heads*D]; keys/values from `pages`."""
    out = torch.empty_like(q)
    h, hk, d = page.num_heads, page.num_kv_heads, page.head_dim
    dev = q.device
    for g in layout.groups:
        n = g.members.numel()
        kv = page.gather(pages, g.key_slots.to(dev), page.kv_cols)  # [n, max_k, 2 * kv_size]
        keys = kv[..., : page.kv_size].reshape(n, g.max_keys, hk, d).transpose(1, 2)
        values = kv[..., page.kv_size:].reshape(n, g.max_keys, hk, d).transpose(1, 2)
        if hk != h:
            keys = keys.repeat_interleave(h // hk, dim=1)
            values = values.repeat_interleave(h // hk, dim=1)
        # Dense groups (every member with max_queries rows, contiguous in q; every member
        # with max_keys keys) skip the scatter, the gather and the mask: the common full-
        # recompute step and a batch of equal canvases. Same SDPA call otherwise.
        dense_q = not g.queries_padded and g.query_span is not None
        if dense_q:
            qp = q[g.query_span[0]: g.query_span[1]]
        else:
            rows, dst = g.query_rows.to(dev), g.query_dst.to(dev)
            qp = q.new_zeros(n * g.max_queries, h * d)
            qp[dst] = q[rows]
        qh = qp.view(n, g.max_queries, h, d).transpose(1, 2)
        # SDPA with a boolean key mask: measured faster than an explicit softmax(QK^T)V here
        # (2-3x in fp32, ~60x in bf16 on AVX2: benchmarks/results/attention.md).
        valid = g.key_valid[:, None, None, :].to(dev) if g.keys_padded else None
        att = F.scaled_dot_product_attention(qh, keys.to(q.dtype), values.to(q.dtype),
                                             attn_mask=valid)
        att = att.transpose(1, 2).reshape(n * g.max_queries, h * d)
        if dense_q:
            out[g.query_span[0]: g.query_span[1]] = att
        else:
            out[rows] = att[dst]
    return out


def flash_varlen_attention(q: torch.Tensor, pages: torch.Tensor, layout: VarlenLayout,
                           page: PageLayout, block_size: int) -> torch.Tensor:  # pragma: no cover
    """CUDA: vLLM's flash-attention varlen kernel, K/V read in place through the block table.
    Untested here (no GPU on the project's machines)."""
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    h, hk, d = page.num_heads, page.num_kv_heads, page.head_dim
    blocks = pages.view(-1, block_size, page.row_size)
    key_cache = blocks[..., page.k_cols].unflatten(-1, (hk, d))
    value_cache = blocks[..., page.v_cols].unflatten(-1, (hk, d))
    dev = q.device
    out = flash_attn_varlen_func(
        q=q.view(-1, h, d), k=key_cache, v=value_cache,
        cu_seqlens_q=layout.query_start_loc.to(dev), max_seqlen_q=layout.max_query_len,
        seqused_k=layout.seq_lens.to(dev), max_seqlen_k=layout.max_seq_len,
        softmax_scale=d ** -0.5, causal=False, block_table=layout.block_table.to(dev))
    return out.reshape(q.shape[0], h * d)


def xformers_varlen_attention(q: torch.Tensor, pages: torch.Tensor, layout: VarlenLayout,
                              page: PageLayout) -> torch.Tensor:  # pragma: no cover
    """CUDA without vLLM's flash-attention: one xformers call over the concatenated canvases,
    a block-diagonal mask keeping each request's queries on its own keys. Untested here."""
    from xformers.ops import fmha

    h, hk, d = page.num_heads, page.num_kv_heads, page.head_dim
    kv = page.gather(pages, layout.key_slots.to(q.device), page.kv_cols)
    keys, values = kv[:, : page.kv_size].view(-1, hk, d), kv[:, page.kv_size:].view(-1, hk, d)
    if hk != h:
        keys = keys.repeat_interleave(h // hk, dim=1)
        values = values.repeat_interleave(h // hk, dim=1)
    q_lens = (layout.query_start_loc[1:] - layout.query_start_loc[:-1]).tolist()
    mask = fmha.attn_bias.BlockDiagonalMask.from_seqlens(q_lens, layout.seq_lens.tolist())
    out = fmha.memory_efficient_attention(q.view(1, -1, h, d), keys[None], values[None],
                                          attn_bias=mask, scale=d ** -0.5)
    return out.reshape(q.shape[0], h * d)
