"""Fast-dLLM's dual cache: reuse K/V of the prefix and of the suffix; recompute the block only.

Refreshes like the prefix cache (whole canvas at a block's first step, optionally every
`refresh_interval` steps); on other steps only the current block runs, with every position in
it, decoded or not, so a token committed in the block gets its own K/V at the next step.

Under the window schedule the "block" is the window_length-aligned chunk holding the leftmost
masked position, stretched to the window's last position: the window may reach past the chunk,
and tokens it commits there are recomputed like the chunk's own until the chunk changes
(running only the chunk and the still-masked window would leave such a token with its MASK's
K/V until the next refresh).
"""

from __future__ import annotations

import torch

from vllm_elastic.cache.prefix import PrefixCache


class DualCache(PrefixCache):
    name = "dual"

    def partial_positions(self, canvas) -> torch.Tensor:
        window = canvas.commit_positions()
        end = max(self.anchor + canvas.anchor_length(),
                  int(window.max()) + 1 if window.numel() else 0)
        block = torch.arange(self.anchor, min(end, canvas.length))
        # The last committed tokens lie in the block, except when the window has run out of
        # masks short of them (the answer's last tokens): listed so they are never missed.
        return torch.cat([block, canvas.last_committed, canvas.logit_rows()]).unique()
