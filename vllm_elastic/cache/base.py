"""What a cache policy decides, and what it counts.

A policy belongs to one request. Each step it says which canvas positions enter layer 0
(`begin_step`), whether a layer switches to recomputing every position with its inputs taken
from the cached layer inputs (`refresh_from`), and what attention statistics it wants
(`probe`). The model, the attention layer and the engine only follow these answers; all
cached K/V (and Q, layer inputs) live in the request's paged KV blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Probe:
    """Attention statistics a policy wants from one layer for one request.

    tracked: positions whose old and new attention rows are compared (drift test); empty for
      no test. window: positions whose attention mass over keys is summed (most-attended).
    min_weight: keys whose weights are below it in both rows are left out of the drift mean.
    """

    tracked: torch.Tensor
    window: torch.Tensor
    min_weight: float = 0.0


@dataclass
class LayerStats:
    similarity: float | None  # mean cosine similarity of tracked rows (None: no drift test)
    attention_mass: torch.Tensor | None  # [canvas] summed attention of the window rows


@dataclass
class Accounting:
    """How much a request computed, to explain speed rather than just time it."""

    num_layers: int
    cache_policy: str = "none"
    steps: int = 0
    token_layers: int = 0  # token-layer evaluations computed
    full_token_layers: int = 0  # what full recompute would have computed
    query_token_layers: int = 0  # the compute bound: each step's query set through every layer
    refreshes: list[int] = field(default_factory=list)  # per layer: steps it ran every token

    def __post_init__(self) -> None:
        self.refreshes = [0] * self.num_layers

    def as_dict(self) -> dict:
        return {
            "cache_policy": self.cache_policy, "steps": self.steps, "token_layer_evals": self.token_layers,
            "token_layer_evals_full": self.full_token_layers,
            "token_layer_evals_query": self.query_token_layers,
            "work_fraction": round(self.token_layers / max(1, self.full_token_layers), 4),
            "refreshes_per_layer": list(self.refreshes),
        }


class CachePolicy:
    """Full recompute (`none`): every position through every layer, every step."""

    name = "none"
    caches_layer_inputs = False  # True if layers must store their input hidden states

    def __init__(self, params, num_layers: int) -> None:
        self.params = params
        self.num_layers = num_layers
        self.accounting = Accounting(num_layers, cache_policy=self.name)

    def begin_step(self, canvas) -> torch.Tensor:
        """Sorted canvas positions that enter layer 0 this step."""
        return torch.arange(canvas.length)

    def refresh_from(self, layer: int) -> bool:
        """True if, from this layer on, every position is recomputed (inputs from the cache)."""
        return False

    def restart_from(self, layer: int) -> int | None:
        """After `layer` ran: the layer from which to recompute every position (from cached
        inputs) before going on, or None."""
        return None

    def probe(self, layer: int) -> Probe | None:
        return None

    def observe(self, layer: int, stats: LayerStats) -> None:
        pass

    def end_step(self, canvas) -> None:
        pass

    def count_layer(self, layer: int, num_active: int, canvas_length: int) -> None:
        a = self.accounting
        a.token_layers += num_active
        a.full_token_layers += canvas_length
        if layer == 0:  # layer 0 runs exactly the step's query set
            a.query_token_layers += num_active * self.num_layers
        if num_active == canvas_length:
            a.refreshes[layer] += 1
        if layer == self.num_layers - 1:
            a.steps += 1
