"""One engine step's batch: which rows each request runs through each layer.

The runner builds a `DiffusionBatch` per step; the step's executor (executor.py) drives it
around each layer it calls. Requests are laid out one after another in the flat token batch.

  * `plan_layer`: asks each request's policy for its `LayerPlan` and carries it out for the
    whole batch: store the layer's inputs in the pages, widen requests to every position
    (their other rows' inputs read back from the pages), stack the probes into one
    `ProbeBatch`, count the work; returns the layer's immutable `LayerContext`, what its
    attention reads;
  * `observe`: hands each request the statistics it asked for (the attention statistics the
    layer returned, and the staleness of its sentinels against the next layer's cached
    inputs); returns the restarts the policies answered with (request -> first layer);
  * `narrow` / `widen`: the executor runs a restart (layers k..l over every position) over
    the restarting requests only, then goes on with everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vllm_elastic.cache import CachePolicy, LayerPlan, LayerStats
from vllm_elastic.engine.accounting import Accounting
from vllm_elastic.kernels.staleness import sentinel_staleness
from vllm_elastic.kernels.statistics import ProbeBatch
from vllm_elastic.kernels.step import AttentionStats, LayerContext
from vllm_elastic.kernels.varlen import VarlenLayout, build_layout

# What a restart's rerun of a layer does for each rerun request.
_RERUN = LayerPlan(store_inputs=True)


@dataclass
class RequestPass:
    """One request's pass through the layers in this step."""

    policy: CachePolicy
    slots: torch.Tensor  # KV slot of every canvas position
    active: torch.Tensor  # sorted positions the current layer computes
    accounting: Accounting

    @property
    def length(self) -> int:
        return self.slots.shape[0]


class DiffusionBatch:
    def __init__(self, passes: list[RequestPass], device: torch.device, block_size: int,
                 num_heads: int = 1) -> None:
        self.passes = passes
        self.device = device
        self.block_size, self.num_heads = block_size, num_heads
        self.members = list(range(len(passes)))  # requests in the current pass
        self.rerun = False  # inside a restart: layers already run this step, run again
        self.plans: list[LayerPlan] = []  # the current layer's plan of each member
        self.probes: ProbeBatch | None = None  # the current layer's stacked probes
        self._probe_cache: tuple[tuple, ProbeBatch] | None = None
        self._layout()

    def _layout(self) -> None:
        ps = [self.passes[r] for r in self.members]
        counts = [p.active.numel() for p in ps]
        self.query_start_loc = [0]
        for n in counts:
            self.query_start_loc.append(self.query_start_loc[-1] + n)
        self.positions = torch.cat([p.active for p in ps]).to(self.device)
        self.slot_mapping = torch.cat([p.slots[p.active] for p in ps]).to(self.device)
        self.varlen: VarlenLayout = build_layout(counts, [p.slots for p in ps], self.block_size,
                                                 self.num_heads)

    def _rows(self, x: torch.Tensor, j: int) -> torch.Tensor:
        return x[self.query_start_loc[j]: self.query_start_loc[j + 1]]

    def plan_layer(self, layer: int, x: torch.Tensor, attn: nn.Module
                   ) -> tuple[torch.Tensor, LayerContext]:
        """Carry out every request's plan for `layer` (`attn`: its attention, whose pages
        take the stored inputs). Returns the layer's inputs (widened where a plan says so)
        and its context."""
        self.plans = plans = [_RERUN if self.rerun else self.passes[r].policy.layer_plan(layer)
                              for r in self.members]
        store = [j for j, plan in enumerate(plans) if plan.store_inputs]
        if len(store) == len(plans):  # the common case: one write for the whole batch
            attn.write_hidden(self.slot_mapping, x)
        elif store:
            rows = torch.cat([torch.arange(self.query_start_loc[j], self.query_start_loc[j + 1])
                              for j in store]).to(x.device)
            attn.write_hidden(self.slot_mapping[rows], x[rows])
        parts, changed = [], False
        for j, (r, plan) in enumerate(zip(self.members, plans)):
            p, xr = self.passes[r], self._rows(x, j)
            if plan.widen and p.active.numel() < p.length:
                p.active = torch.arange(p.length)
                xr = attn.read_hidden(p.slots.to(x.device)).to(x.dtype)
                changed = True
            p.accounting.count_layer(layer, p.active.numel(), p.length, rerun=self.rerun,
                                     sentinels=_count(plan.sentinels))
            parts.append(xr)
        self.probes = self._probe_batch(plans)
        if changed:
            self._layout()
            x = torch.cat(parts)
        return x, LayerContext(self.positions, self.slot_mapping, self.varlen, self.probes)

    def _probe_batch(self, plans: list[LayerPlan]) -> ProbeBatch | None:
        """The layer's probes stacked; the previous layer's stack when the probes are the
        same (a policy hands the same tracked/window tensors to every layer of a step)."""
        probed = [(r, plan.probe) for r, plan in zip(self.members, plans) if plan.probe]
        if not probed:
            return None
        key = tuple((r, id(pr.window), id(pr.tracked) if pr.tracked.numel() else None,
                     pr.min_weight) for r, pr in probed)
        if self._probe_cache is None or self._probe_cache[0] != key:
            self._probe_cache = key, ProbeBatch.stack(
                [r for r, _ in probed], [self.passes[r].slots for r, _ in probed],
                [pr.tracked for _, pr in probed], [pr.window for _, pr in probed],
                [pr.min_weight for _, pr in probed]).to(self.device)
        return self._probe_cache[1]

    def observe(self, layer: int, x: torch.Tensor, stats: AttentionStats | None,
                next_attn: nn.Module | None) -> dict[int, int]:
        """Hand the policies what they asked for in their plans of `layer` (x: its output;
        stats: what its attention returned; next_attn: the next layer's attention, whose
        pages hold the cached inputs the sentinels are compared with, None after the last).
        Returns the restarts they answered with: request -> first layer to recompute."""
        restarts: dict[int, int] = {}
        for r, request_stats in self._layer_stats(x, stats, next_attn).items():
            start = self.passes[r].policy.observe(layer, request_stats)
            if start is not None:
                restarts[r] = start
        self.probes, self.plans = None, []
        return restarts

    def split(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The flat batch's rows per member request."""
        return {r: self._rows(x, j) for j, r in enumerate(self.members)}

    def narrow(self, group: list[int]) -> None:
        """A restart: only `group` runs, every position of each, layers it already ran."""
        self.members, self.rerun = group, True
        for r in group:
            self.passes[r].active = torch.arange(self.passes[r].length)
        self._layout()

    def widen(self, everyone: list[int]) -> None:
        """Back to every request of the step after a restart."""
        self.members, self.rerun = everyone, False
        self._layout()

    def _layer_stats(self, x: torch.Tensor, attention: AttentionStats | None,
                     next_attn: nn.Module | None) -> dict[int, LayerStats]:
        """The statistics each request asked for in its plan of the layer that just ran."""
        stats: dict[int, LayerStats] = {}
        if self.probes is not None and attention is not None:
            mass = attention.mass.cpu()  # one copy for the layer, not one per request
            for j, r in enumerate(self.probes.requests):
                stats[r] = LayerStats(attention.similarities[j], mass[j, :self.passes[r].length])
        guarded = [(j, r, plan.sentinels) for j, (r, plan) in enumerate(zip(self.members,
                   self.plans)) if plan.sentinels is not None]
        if guarded and next_attn is not None:
            rows = torch.cat([self.query_start_loc[j]
                              + torch.searchsorted(self.passes[r].active, s)
                              for j, r, s in guarded]).to(x.device)
            slots = torch.cat([self.passes[r].slots[s] for _, r, s in guarded]).to(x.device)
            values = sentinel_staleness(x[rows], next_attn.read_hidden(slots),
                                        [s.numel() for _, _, s in guarded])
            for (_, r, _), value in zip(guarded, values):
                stats.setdefault(r, LayerStats()).staleness = value
        return stats

    def output_rows(self, r: int, positions: torch.Tensor) -> torch.Tensor:
        """Flat row indices (after the last layer) of request r's given canvas positions."""
        p = self.passes[r]
        return self.query_start_loc[r] + torch.searchsorted(p.active, positions)


def _count(positions: torch.Tensor | None) -> int:
    return 0 if positions is None else positions.numel()
