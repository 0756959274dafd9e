"""The step's batched attention (varlen.py) and batched statistics (statistics.py) against
per-request computations; the layout every kernel (the CUDA one included) is driven by."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm_elastic.kernels.statistics import (ProbeBatch, attention_probs, drift_rows_before,
                                          head_axis_similarity, layer_statistics)
from vllm_elastic.kernels.page_layout import PageLayout
from vllm_elastic.kernels import varlen

BLOCK = 16


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _pages(page: PageLayout, lengths: list[int], seed: int = 0):
    """Random pages and each request's canvas slots (blocks shuffled, as vLLM hands them out)."""
    g = torch.Generator().manual_seed(seed)
    blocks = [-(-n // BLOCK) for n in lengths]
    order = torch.randperm(sum(blocks) + 2, generator=g) + 1
    slots, used = [], 0
    for n, b in zip(lengths, blocks):
        ids = order[used: used + b]
        used += b
        pos = torch.arange(n)
        slots.append(ids[pos // BLOCK] * BLOCK + pos % BLOCK)
    pages = torch.randn((sum(blocks) + 3) * BLOCK, page.row_size, generator=g)
    return pages, slots


def _per_request(q, pages, slots, active, page):
    out, start = [], 0
    for s, a in zip(slots, active):
        n = a.numel()
        qh = q[start: start + n].view(n, page.num_heads, page.head_dim).transpose(0, 1)
        k = pages[s, page.k_cols].view(-1, page.num_kv_heads, page.head_dim).transpose(0, 1)
        v = pages[s, page.v_cols].view(-1, page.num_kv_heads, page.head_dim).transpose(0, 1)
        rep = page.num_heads // page.num_kv_heads
        k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
        out.append(F.scaled_dot_product_attention(qh, k, v).transpose(0, 1).reshape(n, -1))
        start += n
    return torch.cat(out)


def test_layout_offsets_lengths_and_block_table():
    page = PageLayout("kv", 4, 2, 8, 32)
    _, slots = _pages(page, [20, 33, 5])
    layout = varlen.build_layout([3, 33, 1], slots, BLOCK, heads=4)
    assert layout.query_start_loc.tolist() == [0, 3, 36, 37]
    assert layout.seq_lens.tolist() == [20, 33, 5]
    assert layout.block_table.shape == (3, 3)
    for r, s in enumerate(slots):
        pos = torch.arange(s.numel())
        rebuilt = layout.block_table[r].long()[pos // BLOCK] * BLOCK + pos % BLOCK
        assert torch.equal(rebuilt, s)  # what flash-attention reads through the table
    assert torch.equal(layout.key_slots, torch.cat(slots))  # xformers' concatenated keys
    members = sorted(int(m) for g in layout.groups for m in g.members)
    assert members == [0, 1, 2]


def test_groups_bound_padding_and_memory(monkeypatch):
    # One full-canvas request among many small query sets: not padded to its size.
    counts, lengths = [600] + [40] * 15, [600] * 16
    groups = varlen._plan_groups(counts, lengths, heads=8)
    assert len(groups) >= 2 and [0] in groups
    # Full canvases of different lengths: each its own call (padding one costs more than a
    # call); small window query sets of the same canvases still share one.
    lengths = [600 + 7 * r for r in range(16)]
    assert sorted(map(len, varlen._plan_groups(lengths, lengths, heads=8))) == [1] * 16
    assert len(varlen._plan_groups([16] * 16, [600 + r for r in range(16)], heads=8)) == 1
    monkeypatch.setattr(varlen, "MAX_GROUP_SCORES", 8 * 40 * 600 * 4)
    groups = varlen._plan_groups([40] * 16, [600] * 16, heads=8)
    assert all(len(g) <= 4 for g in groups) and sum(len(g) for g in groups) == 16


def test_torch_varlen_attention_equals_per_request_attention_gqa():
    page = PageLayout("full", 4, 2, 8, 32)
    lengths = [20, 37, 9, 37]
    pages, slots = _pages(page, lengths)
    g = torch.Generator().manual_seed(1)
    active = [torch.arange(20), torch.tensor([0, 5, 36]), torch.arange(9), torch.tensor([7])]
    q = torch.randn(sum(a.numel() for a in active), page.q_size, generator=g)
    layout = varlen.build_layout([a.numel() for a in active], slots, BLOCK, heads=4)
    got = varlen.torch_varlen_attention(q, pages, layout, page)
    assert torch.allclose(got, _per_request(q, pages, slots, active, page), atol=1e-5)


def test_dense_groups_skip_mask_and_scatter_and_agree():
    """Equal canvases with every row as a query (full recompute): one dense group, no key
    mask, no query scatter; q may be a strided view (a slice of the fused QKV output)."""
    page = PageLayout("full", 4, 2, 8, 32)
    pages, slots = _pages(page, [24, 24, 24], seed=5)
    active = [torch.arange(24)] * 3
    fused = torch.randn(72, 3 * page.q_size, generator=torch.Generator().manual_seed(6))
    q = fused[:, : page.q_size]
    layout = varlen.build_layout([24] * 3, slots, BLOCK, heads=4)
    (group,) = layout.groups
    assert not group.keys_padded and not group.queries_padded and group.query_span == (0, 72)
    got = varlen.torch_varlen_attention(q, pages, layout, page)
    assert torch.allclose(got, _per_request(q, pages, slots, active, page), atol=1e-5)
    mixed = varlen.build_layout([24, 3, 24], slots, BLOCK, heads=4)
    assert any(g.queries_padded or g.query_span is None for g in mixed.groups)


def test_batched_statistics_equal_each_request_alone():
    page = PageLayout("full", 4, 4, 8, 32)
    lengths = [30, 19, 41]
    pages, slots = _pages(page, lengths, seed=3)
    tracked = [torch.tensor([2, 7]), torch.tensor([], dtype=torch.long), torch.tensor([40])]
    window = [torch.arange(10, 14), torch.arange(3, 8), torch.arange(20, 22)]
    min_weight = [0.0, 0.0, 1e-6]
    probes = ProbeBatch.stack([0, 1, 2], slots, tracked, window, min_weight)
    before = drift_rows_before(pages, probes, page)
    old_pages = pages.clone()
    g = torch.Generator().manual_seed(4)
    pages[torch.cat(slots)] += 0.3 * torch.randn(sum(lengths), page.row_size, generator=g)
    sims, mass = layer_statistics(pages, probes, page, before, reduce=_same)
    assert sims[1] is None  # no tracked tokens: no drift test
    for j, s in enumerate(slots):
        k_new, k_old = pages[s, page.k_cols][None], old_pages[s, page.k_cols][None]
        valid = torch.ones(1, s.numel(), dtype=torch.bool)
        w = attention_probs(pages[s[window[j]], page.q_cols][None], k_new, valid, page)[0]
        assert torch.allclose(mass[j, : s.numel()], w.sum(dim=(0, 1)), atol=1e-5)
        assert float(mass[j, s.numel():].abs().sum()) == 0.0  # padding gets no mass
        if tracked[j].numel():
            new = attention_probs(pages[s[tracked[j]], page.q_cols][None], k_new, valid, page)[0]
            old = attention_probs(old_pages[s[tracked[j]], page.q_cols][None], k_old, valid,
                                  page)[0]
            want = head_axis_similarity(new, old, min_weight=min_weight[j], reduce=_same)
            assert abs(sims[j] - want) < 1e-6
            if min_weight[j] == 0:
                expected = float(F.cosine_similarity(new, old, dim=0).mean())
                assert abs(sims[j] - expected) < 1e-5


def test_page_layout_columns():
    full, kv = PageLayout("full", 4, 2, 8, 32), PageLayout("kv", 4, 2, 8, 32)
    assert (full.k_cols, full.v_cols, full.q_cols, full.h_cols) == (
        slice(0, 16), slice(16, 32), slice(32, 64), slice(64, 96))
    assert full.row_size == 96 and kv.row_size == 32
    assert kv.serves("dual") and not kv.serves("elastic") and full.serves("elastic")
