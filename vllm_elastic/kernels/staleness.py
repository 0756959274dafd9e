"""The staleness guard's measurement (cache/guard.py) for every guarded request of a layer.

Sentinel rows ran through layer l like query rows; their fresh output is the input layer l+1
would cache for them now. Against the input it holds from their last refresh, the relative L2
change of each row, averaged per request, is that request's staleness of layer l's cache.
Hidden states are whole on every tensor-parallel rank; the means are still averaged over the
ranks (one small all-reduce per layer) so every rank provably takes the same decision.
"""

from __future__ import annotations

from typing import Callable

import torch

from vllm_elastic.kernels.statistics import tp_mean

_NORM_EPS = 1e-12


def sentinel_staleness(fresh: torch.Tensor, cached: torch.Tensor, counts: list[int],
                       reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> list[float]:
    """fresh, cached [rows, hidden] (the requests' sentinel rows one after another, counts[j]
    of request j, each >= 1) -> mean relative L2 change per request. One host read."""
    fresh, cached = fresh.float(), cached.float()
    change = (fresh - cached).norm(dim=-1) / cached.norm(dim=-1).clamp_min(_NORM_EPS)
    sizes = torch.tensor(counts, device=change.device)
    owner = torch.repeat_interleave(torch.arange(len(counts), device=change.device), sizes)
    sums = torch.zeros(len(counts), device=change.device).index_add_(0, owner, change)
    return (reduce or tp_mean)(sums / sizes).tolist()
