"""Elastic-Cache's attention statistics for every probed request of a layer, in one pass.

A policy that wants statistics from a layer hands the batch a `Probe` (tracked positions for
the drift test, window positions for the most-attended pick). The batch stacks the probes of
all requests of the layer into one `ProbeBatch` (padded to the largest), and the attention
layer computes, for all of them at once:

  * drift similarity (`head_axis_similarity`): cosine along the head axis between the tracked
    tokens' attention rows as the cache held them before this step (cached Q against cached
    K) and as they are after this step's writes, averaged over tracked tokens x keys;
  * window attention mass: the window rows' attention weights summed over heads and rows, one
    value per key.

Under tensor parallelism every rank holds some heads: the per-key head sums (three for the
cosine, one for the mass) are added across ranks in one all-reduce per layer, so every rank
takes the same decision. The similarities reach the host in one read per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vllm.distributed import get_tensor_model_parallel_world_size, tensor_model_parallel_all_reduce

from vllm_elastic.kernels.page_layout import PageLayout

_COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default eps


@dataclass
class ProbeBatch:
    """The probes of one layer's requests, padded. P probed requests; index j of every field
    is the request `requests[j]` of the batch."""

    requests: list[int]
    key_slots: torch.Tensor  # [P, L] canvas page slots (padding: the request's slot 0)
    key_valid: torch.Tensor  # [P, L] bool
    tracked_slots: torch.Tensor  # [P, T] (T = 0: no drift test in this layer)
    tracked_valid: torch.Tensor  # [P, T] bool; a row of False: that request runs no test
    window_slots: torch.Tensor  # [P, W]
    window_valid: torch.Tensor  # [P, W] bool
    min_weight: torch.Tensor  # [P] drift_min_weight of each request
    tests: list[bool]  # which requests run the drift test (known on the host)
    # [P, W (+ T)] the rows whose attention after this step's writes is needed: the window,
    # then (when some request tests drift) the tracked tokens: one gather and one score
    # matmul for both.
    query_slots: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.query_slots is None:
            self.query_slots = (torch.cat([self.window_slots, self.tracked_slots], dim=1)
                                if self.tests_drift else self.window_slots)
        # Known on the host at construction: whether any key or window row is padding (one
        # request never has any), so the masking ops are skipped when nothing is masked.
        self.keys_padded = not bool(self.key_valid.all())
        self.window_padded = not bool(self.window_valid.all())

    @property
    def key_mask(self) -> torch.Tensor | None:
        """key_valid where some key is padding, else None (nothing to mask)."""
        return self.key_valid if self.keys_padded else None

    def to(self, device: torch.device) -> "ProbeBatch":
        """The index and mask tensors on the pages' device (no-op on CPU)."""
        for name in ("key_slots", "key_valid", "tracked_slots", "tracked_valid", "window_slots",
                     "window_valid", "min_weight", "query_slots"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def tests_drift(self) -> bool:
        return any(self.tests)

    @staticmethod
    def stack(requests: list[int], slots: list[torch.Tensor], tracked: list[torch.Tensor],
              window: list[torch.Tensor], min_weight: list[float]) -> "ProbeBatch":
        """From per-request canvas slots and tracked/window positions (canvas indices)."""
        key_slots, key_valid = _pad([s for s in slots], slots)
        tracked_slots, tracked_valid = _pad([s[t] for s, t in zip(slots, tracked)], slots)
        window_slots, window_valid = _pad([s[w] for s, w in zip(slots, window)], slots)
        return ProbeBatch(requests, key_slots, key_valid, tracked_slots, tracked_valid,
                          window_slots, window_valid, torch.tensor(min_weight),
                          [t.numel() > 0 for t in tracked])


def _pad(rows: list[torch.Tensor], slots: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    width = max(r.numel() for r in rows)
    out = torch.stack([torch.cat([r, s[:1].expand(width - r.numel())])
                       for r, s in zip(rows, slots)])
    valid = torch.arange(width)[None, :] < torch.tensor([r.numel() for r in rows])[:, None]
    return out, valid


def attention_probs(q: torch.Tensor, k: torch.Tensor, key_valid: torch.Tensor | None,
                    page: PageLayout) -> torch.Tensor:
    """Attention weights [P, heads, n, L] of queries q [P, n, heads*D] over keys
    k [P, L, kv_heads*D], padded keys (key_valid False; None: none) weighted 0. In the
    pages' dtype (the model's), as the Elastic-Cache authors compute their statistic."""
    p, n, length = q.shape[0], q.shape[1], k.shape[1]
    h, hk, d = page.num_heads, page.num_kv_heads, page.head_dim
    qh = q.view(p, n, h, d).transpose(1, 2)
    kh = k.view(p, length, hk, d).transpose(1, 2)
    if hk != h:
        kh = kh.repeat_interleave(h // hk, dim=1)
    scores = qh @ kh.transpose(2, 3) * d ** -0.5
    if key_valid is not None:  # None: no padded keys (one request, or equal canvases)
        scores.masked_fill_(~key_valid[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def drift_rows_before(pages: torch.Tensor, probes: ProbeBatch, page: PageLayout
                      ) -> torch.Tensor | None:
    """The tracked tokens' attention rows from the cache as it stands before this step writes
    (computed now, so nothing needs copying); None when no request of the layer tests."""
    if not probes.tests_drift:
        return None
    return attention_probs(page.gather(pages, probes.tracked_slots, page.q_cols),
                           page.gather(pages, probes.key_slots, page.k_cols), probes.key_mask,
                           page)


def layer_statistics(pages: torch.Tensor, probes: ProbeBatch, page: PageLayout,
                     before: torch.Tensor | None,
                     reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                     ) -> tuple[list[float | None], torch.Tensor]:
    """(drift similarity per probed request, None where it runs no test; window attention
    mass [P, L] per key). One all-reduce and one host read."""
    reduce = reduce or tp_sum
    keys = page.gather(pages, probes.key_slots, page.k_cols)
    probs = attention_probs(page.gather(pages, probes.query_slots, page.q_cols), keys,
                            probes.key_mask, page)
    w = probes.window_slots.shape[1]
    window = probs[:, :, :w]
    if probes.window_padded:
        window = window * probes.window_valid[:, None, :, None]
    mass = window.sum(dim=(1, 2))  # [P, L]
    if before is None:
        return [None] * len(probes.requests), reduce(mass)
    new = probs[:, :, w:]
    head_sums = torch.stack([(new * before).sum(1), (new * new).sum(1), (before * before).sum(1)])
    flat = reduce(torch.cat([head_sums.flatten(), mass.flatten()]))
    head_sums, mass = flat[: head_sums.numel()].view_as(head_sums), flat[head_sums.numel():]
    valid = probes.tracked_valid[:, :, None] & probes.key_valid[:, None, :]
    similarity = _mean_cosine(head_sums, valid, probes.min_weight)
    values = similarity.tolist()  # the layer's one host read
    return ([v if t else None for v, t in zip(values, probes.tests)],
            mass.view(len(probes.requests), -1))


def _mean_cosine(head_sums: torch.Tensor, valid: torch.Tensor, min_weight: torch.Tensor
                 ) -> torch.Tensor:
    """Mean over valid (token, key) pairs of the head-axis cosine [P]. Each norm is clamped on
    its own, as torch's F.cosine_similarity does (clamping their product scores every key with
    weights below ~1e-4 as cosine 0). Where min_weight > 0 (beyond the paper) only keys whose
    weight norm reaches it in the old or the new row count; none left -> 1."""
    dot, new_sq, old_sq = head_sums.float()
    new_norm, old_norm = new_sq.sqrt(), old_sq.sqrt()
    cos = dot / (new_norm.clamp_min(_COS_EPS) * old_norm.clamp_min(_COS_EPS))
    floor = min_weight[:, None, None]
    kept = valid & ((floor <= 0) | (new_norm >= floor) | (old_norm >= floor))
    count = kept.sum(dim=(1, 2))
    total = (cos * kept).sum(dim=(1, 2), dtype=torch.float64)
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))


def head_axis_similarity(new: torch.Tensor, old: torch.Tensor, min_weight: float = 0.0,
                         reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """The drift statistic for one request: attention weights [heads, n, L] -> mean cosine
    along the head axis over the n x L (token, key) pairs (see `_mean_cosine`)."""
    reduce = reduce or tp_sum
    head_sums = reduce(torch.stack([(new * old).sum(0), (new * new).sum(0),
                                    (old * old).sum(0)]))[:, None]
    valid = torch.ones(1, *new.shape[1:], dtype=torch.bool)
    return float(_mean_cosine(head_sums, valid, torch.tensor([float(min_weight)]))[0])


def tp_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a per-rank statistic over tensor-parallel ranks (heads are split across them)."""
    if get_tensor_model_parallel_world_size() > 1:
        return tensor_model_parallel_all_reduce(t.contiguous())
    return t


def tp_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a statistic every rank computed alike (whole hidden states) over the ranks, so
    that each rank provably holds the same bits."""
    world = get_tensor_model_parallel_world_size()
    return tensor_model_parallel_all_reduce(t.contiguous()) / world if world > 1 else t
