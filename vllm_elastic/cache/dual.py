"""Fast-dLLM's dual cache: reuse K/V of the prefix and of the suffix; recompute the block only.

Refreshes like the prefix cache (whole canvas at a block's first step, optionally every
`refresh_interval` steps); on other steps only the current block (and, under the window
schedule, any window position beyond it) runs.
"""

from __future__ import annotations

import torch

from vllm_elastic.cache.prefix import PrefixCache


class DualCache(PrefixCache):
    name = "dual"

    def partial_positions(self, canvas) -> torch.Tensor:
        block = torch.arange(self.anchor, min(self.anchor + canvas.anchor_length(), canvas.length))
        return torch.cat([block, canvas.commit_positions(), canvas.logit_rows()]).unique()
