"""One engine step's batch: which rows each request runs through each layer.

The runner builds a `DiffusionBatch` per step and sets it as the forward context's attention
metadata. Requests are laid out one after another in the flat token batch. Before each layer
the model calls `enter_layer`, which lets each request's cache policy store layer inputs and
switch to recomputing every position (refresh); the attention layers read the flat slot
mapping and the per-request `RequestPass` (all KV slots, probes) from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Callable

import torch

from vllm.forward_context import get_forward_context

from vllm_elastic.cache import CachePolicy


@dataclass
class RequestPass:
    """One request's pass through the layers in this step."""

    policy: CachePolicy
    slots: torch.Tensor  # KV slot of every canvas position
    active: torch.Tensor  # sorted positions the current layer computes

    @property
    def length(self) -> int:
        return self.slots.shape[0]


class DiffusionBatch:
    def __init__(self, passes: list[RequestPass], device: torch.device) -> None:
        self.passes = passes
        self.device = device
        self._layout()

    def _layout(self) -> None:
        starts = [0]
        for p in self.passes:
            starts.append(starts[-1] + p.active.numel())
        self.query_start_loc = starts
        self.positions = torch.cat([p.active for p in self.passes]).to(self.device)
        self.slot_mapping = torch.cat([p.slots[p.active] for p in self.passes]).to(self.device)

    def rows(self, x: torch.Tensor, r: int) -> torch.Tensor:
        return x[self.query_start_loc[r]: self.query_start_loc[r + 1]]

    def enter_layer(self, layer: int, x: torch.Tensor, attn) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer inputs for policies that cache them; expand refreshing requests to every
        position, their inputs read back from this layer's cache. Returns (x, positions)."""
        parts, changed = [], False
        for r, p in enumerate(self.passes):
            xr = self.rows(x, r)
            if p.policy.caches_layer_inputs:
                attn.write_hidden(p.slots[p.active], xr)
                if p.policy.refresh_from(layer) and p.active.numel() < p.length:
                    p.active = torch.arange(p.length)
                    xr = attn.read_hidden(p.slots).to(x.dtype)
                    changed = True
            p.policy.count_layer(layer, p.active.numel(), p.length)
            parts.append(xr)
        if not changed:
            return x, self.positions
        self._layout()
        return torch.cat(parts), self.positions

    def output_rows(self, r: int, positions: torch.Tensor) -> torch.Tensor:
        """Flat row indices (after the last layer) of request r's given canvas positions."""
        p = self.passes[r]
        return self.query_start_loc[r] + torch.searchsorted(p.active, positions)

    def restarts(self, layer: int) -> bool:
        return any(p.policy.restart_from(layer) is not None for p in self.passes)

    def restart(self, layer: int, x: torch.Tensor,
                redo: Callable[["DiffusionBatch", int, int], torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Requests whose policy asks for it recompute layers start..layer over every
        position (`redo` runs them for a one-request batch); the others keep their rows."""
        parts = []
        for r, p in enumerate(self.passes):
            start = p.policy.restart_from(layer)
            if start is None:
                parts.append(self.rows(x, r))
                continue
            p.active = torch.arange(p.length)
            sub = DiffusionBatch([p], self.device)
            context = get_forward_context()
            saved, context.attn_metadata = context.attn_metadata, sub
            p.policy.redoing = True
            try:
                parts.append(redo(sub, start, layer))
            finally:
                context.attn_metadata, p.policy.redoing = saved, False
        self._layout()
        return torch.cat(parts), self.positions
