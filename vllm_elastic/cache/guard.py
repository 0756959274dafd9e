"""The staleness guard (beyond the paper): measure what goes stale instead of inferring it.

Elastic-Cache's drift test compares a tracked token's attention rows over keys of which only
this step's query rows were recomputed, so it never sees the cached K/V of the other positions
(decoded tokens whose context moved, off-window MASKs, the prompt) go stale; on our long
model it never fires after step 0 and accuracy drops 14 points at gen 512.

The guard adds a few *sentinels* to every partial step: positions from outside the query set
that run through the layers like query rows. After layer l the batch compares their fresh
output with the inputs layer l+1 cached for them at their last refresh (relative L2 change,
averaged over the sentinels: the `staleness` of that layer's cache). The first layer whose
staleness reaches `guard_bound` reruns over every position (its cached inputs are fresh
enough, the layer before passed), and every layer after it updates, as after a drift trigger.
Shallow layers whose outputs hold still keep their cache: the refresh is depth-aware, and its
depth is measured per request and step.

Sentinels are spread evenly over the positions outside the query set, with an offset that
rotates every step, so over a request they visit the whole canvas (and each visit refreshes
the visited position's own cache). guard_bound 0 fires at layer 0 every step: full recompute.
"""

from __future__ import annotations

import torch


class StalenessGuard:
    def __init__(self, bound: float, count: int) -> None:
        self.bound, self.count = bound, count
        self.history: list[float] = []  # every staleness measured, for analysis

    def pick(self, length: int, query: torch.Tensor, step: int) -> torch.Tensor:
        """Sorted sentinel positions for a step whose query set is `query` (sorted, unique):
        `count` positions spread evenly over the rest of the canvas, the offset rotating with
        `step`. Empty when the query set covers the canvas."""
        outside = torch.ones(length, dtype=torch.bool)
        outside[query] = False
        candidates = outside.nonzero().flatten()
        n = candidates.numel()
        if n == 0:
            return candidates
        k = min(self.count, n)
        stride = n // k
        picks = (torch.arange(k) * n) // k + step % stride
        return candidates[picks]

    def fires(self, staleness: float) -> bool:
        self.history.append(staleness)
        return staleness >= self.bound
