"""What a cache policy decides: plans, not actions.

A policy belongs to one request. It never touches pages, tensors of the batch, or other
objects; it answers four questions and the batch (engine/batch.py) carries the answers out for every
request of the step at once:

  * `begin_step(canvas)`: the sorted canvas positions that enter layer 0;
  * `layer_plan(layer)`: a `LayerPlan` for the layer about to run: store the layer's inputs
    in the pages (for later refreshes), widen to every position (inputs of the positions not
    computed this step come from those stored inputs), and which statistics to gather;
  * `observe(layer, stats)`: the statistics it asked for (attention statistics, and the
    staleness of its sentinels' cached rows), after the layer ran; it may answer
    with a layer to restart from (recompute that layer and the ones after it up to this one,
    every position, before going on);
  * `end_step(canvas)`: after the step's commits.

What a request computed is counted by the batch (accounting.py), not by the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Probe:
    """Attention statistics a policy wants from one layer.

    tracked: positions whose old and new attention rows are compared (drift test); empty for
      no test. window: positions whose attention mass over keys is summed (most-attended).
    min_weight: keys whose weights are below it in both rows are left out of the drift mean.
    """

    tracked: torch.Tensor
    window: torch.Tensor
    min_weight: float = 0.0


@dataclass(frozen=True)
class LayerPlan:
    store_inputs: bool = False  # write this layer's input hidden states into the pages
    widen: bool = False  # from this layer on, every position (inputs read from the pages)
    probe: Probe | None = None
    # Positions (among this step's) whose output of this layer is compared with the next
    # layer's cached inputs (the staleness guard, cache/guard.py); None: no comparison.
    sentinels: torch.Tensor | None = None


@dataclass
class LayerStats:
    similarity: float | None = None  # mean cosine similarity of tracked rows (None: no test)
    attention_mass: torch.Tensor | None = None  # [canvas] summed attention of the window rows
    staleness: float | None = None  # sentinels' mean relative change (None: no sentinels)


KEEP = LayerPlan()


class CachePolicy:
    """Full recompute (`none`): every position through every layer, every step."""

    name = "none"

    def __init__(self, params, num_layers: int) -> None:
        self.params = params
        self.num_layers = num_layers

    def begin_step(self, canvas) -> torch.Tensor:
        """Sorted canvas positions that enter layer 0 this step."""
        return torch.arange(canvas.length)

    def layer_plan(self, layer: int) -> LayerPlan:
        return KEEP

    def observe(self, layer: int, stats: LayerStats) -> int | None:
        """Statistics of `layer` (asked for in its plan) -> a layer to restart from, or None."""
        return None

    def end_step(self, canvas) -> None:
        pass
