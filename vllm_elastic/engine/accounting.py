"""What a request computed, counted by the batch as it runs the request through the layers, to
explain speed rather than just time it. Travels to the scheduler with each step's output, and
from there to the finished request (`kv_transfer_params["diffusion"]`) and /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Accounting:
    num_layers: int
    cache_policy: str = "none"
    steps: int = 0
    token_layers: int = 0  # token-layer evaluations computed
    full_token_layers: int = 0  # what full recompute would have computed
    query_token_layers: int = 0  # the compute bound: each step's query set through every layer
    refreshes: list[int] = field(default_factory=list)  # per layer: steps it ran every token
    sentinel_token_layers: int = 0  # the staleness guard's sentinel rows through the layers

    def __post_init__(self) -> None:
        self.refreshes = [0] * self.num_layers
        self._refreshed: set[int] = set()  # layers that ran every position in this step

    def count_layer(self, layer: int, num_active: int, canvas_length: int,
                    rerun: bool = False, sentinels: int = 0) -> None:
        """One pass of `num_active` positions through `layer` (a rerun is a restart's repeat
        of a layer this step already ran: counted as work, not as another step or refresh).
        `sentinels` of them are the guard's, counted once at layer 0 for every layer (they
        run through all of them)."""
        self.token_layers += num_active
        if not rerun:
            self.full_token_layers += canvas_length
            if layer == 0:  # layer 0 runs exactly the step's query set
                self.query_token_layers += num_active * self.num_layers
                self.sentinel_token_layers += sentinels * self.num_layers
                self._refreshed.clear()
            if layer == self.num_layers - 1:
                self.steps += 1
        if num_active == canvas_length and layer not in self._refreshed:
            self._refreshed.add(layer)
            self.refreshes[layer] += 1

    def as_dict(self) -> dict:
        return {
            "cache_policy": self.cache_policy, "steps": self.steps,
            "token_layer_evals": self.token_layers,
            "token_layer_evals_full": self.full_token_layers,
            "token_layer_evals_query": self.query_token_layers,
            "work_fraction": round(self.token_layers / max(1, self.full_token_layers), 4),
            "refreshes_per_layer": list(self.refreshes),
            "token_layer_evals_sentinel": self.sentinel_token_layers,
        }
