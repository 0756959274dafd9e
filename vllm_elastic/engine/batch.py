"""One engine step's batch: which rows each request runs through each layer.

The runner builds a `DiffusionBatch` per step and sets it as the forward context's attention
metadata; attention layers read their layout from it (`varlen`, `slot_mapping`, `probes`) and
hand their statistics back (`record_stats`). Requests are laid out one after another in the
flat token batch. The model's layer loop calls two methods around each layer:

  * `enter_layer`: asks each request's policy for its `LayerPlan` and carries it out for the
    whole batch: store the layer's inputs in the pages, widen requests to every position
    (their other rows' inputs read back from the pages), stack the probes into one
    `ProbeBatch`, count the work;
  * `leave_layer`: hands each probed request its statistics (attention statistics, and the
    staleness of its sentinels against the next layer's cached inputs); a policy may answer with a
    restart (recompute layers k..l over every position): the batch then narrows itself to
    the restarting requests, has the model rerun those layers (one batched pass per layer for
    all of them), and widens back. The forward context is never swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vllm_elastic.cache import CachePolicy, LayerPlan, LayerStats
from vllm_elastic.engine.accounting import Accounting
from vllm_elastic.kernels.staleness import sentinel_staleness
from vllm_elastic.kernels.statistics import ProbeBatch
from vllm_elastic.kernels.varlen import VarlenLayout, build_layout
from vllm_elastic.models.stack import LayerLoop, Rerun

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


class DiffusionBatch(LayerLoop):
    def __init__(self, passes: list[RequestPass], device: torch.device, block_size: int,
                 num_heads: int = 1) -> None:
        self.passes = passes
        self.device = device
        self.block_size, self.num_heads = block_size, num_heads
        self.members = list(range(len(passes)))  # requests in the current pass
        self.rerun = False  # inside a restart: layers already run this step, run again
        self.probes: ProbeBatch | None = None
        self.plans: list[LayerPlan] = []  # the current layer's plan of each member
        self._probe_cache: tuple[tuple, ProbeBatch] | None = None
        self._stats: tuple[list[float | None], torch.Tensor] | None = None
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

    def enter_layer(self, layer: int, x: torch.Tensor, attn) -> tuple[torch.Tensor, torch.Tensor]:
        """Carry out every request's plan for `layer`. Returns (x, positions)."""
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
        return x, self.positions

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

    def record_stats(self, similarities: list[float | None], mass: torch.Tensor) -> None:
        """The attention layer's statistics for `probes` (one entry per probed request)."""
        self._stats = (similarities, mass)

    def leave_layer(self, layer: int, x: torch.Tensor, rerun: Rerun,
                    next_attn: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hand statistics to the policies; carry out restarts with `rerun(start, last,
        inputs, positions)`, which runs layers start..last over the batch as it then stands.
        `next_attn` is the next layer's attention (its pages hold the cached inputs the
        sentinels are compared with); None after the last layer."""
        restarts: dict[int, int] = {}
        for r, stats in self._layer_stats(x, next_attn).items():
            start = self.passes[r].policy.observe(layer, stats)
            if start is not None:
                restarts[r] = start
        self.probes, self._stats, self.plans = None, None, []
        if not restarts:
            return x, self.positions
        parts = {r: self._rows(x, j) for j, r in enumerate(self.members)}
        everyone = self.members
        for start in sorted(set(restarts.values())):
            group = [r for r in everyone if restarts.get(r) == start]
            self.members, self.rerun = group, True
            for r in group:
                self.passes[r].active = torch.arange(self.passes[r].length)
            self._layout()
            inputs = rerun(start, layer, self.slot_mapping, self.positions)
            for j, r in enumerate(group):
                parts[r] = self._rows(inputs, j)
        self.members, self.rerun = everyone, False
        self._layout()
        return torch.cat([parts[r] for r in self.members]), self.positions

    def _layer_stats(self, x: torch.Tensor, next_attn: nn.Module | None
                     ) -> dict[int, LayerStats]:
        """The statistics each request asked for in its plan of the layer that just ran."""
        stats: dict[int, LayerStats] = {}
        if self.probes is not None and self._stats is not None:
            similarities, mass = self._stats
            mass = mass.cpu()  # one copy for the layer, not one per request
            for j, r in enumerate(self.probes.requests):
                stats[r] = LayerStats(similarities[j], mass[j, :self.passes[r].length])
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
