"""Fast-dLLM's prefix cache: reuse K/V of everything left of the current block.

At a block's first step (and every `refresh_interval` steps, if set) the whole canvas runs and
its K/V are cached. On the block's other steps only the block and everything after it run;
tokens before the block attend nowhere and their K/V come from the cache as they stood at the
refresh. Under the window schedule the "block" is the window_length-aligned chunk holding the
leftmost masked position. Every layer runs the positions chosen here (no layer plans).
"""

from __future__ import annotations

import torch

from vllm_elastic.cache.base import CachePolicy


class PrefixCache(CachePolicy):
    name = "prefix"

    def __init__(self, params, num_layers: int) -> None:
        super().__init__(params, num_layers)
        self.anchor: int | None = None  # block start at the last full refresh
        self.age = 0  # steps run since (and including) the last full refresh

    def begin_step(self, canvas) -> torch.Tensor:
        interval = self.params.refresh_interval
        refresh = (canvas.block_start() != self.anchor
                   or (interval is not None and self.age >= interval))
        if refresh:
            self.anchor, self.age = canvas.block_start(), 0
        self.age += 1
        return torch.arange(canvas.length) if refresh else self.partial_positions(canvas)

    def partial_positions(self, canvas) -> torch.Tensor:
        # A shifted-logit model (Dream) also needs the row before the block.
        return torch.arange(self.anchor - canvas.logit_shift, canvas.length)
