"""One engine step through the model's layers: the layer loop, owned here.

Per layer, one straight line for the whole batch:

    x, context = batch.plan_layer(i, x, attention_i)   # every request's cache plan
    contexts[attention_i.layer_name] = context          # what attention reads (immutable)
    x, stats = layer_i(context.positions, x)            # one batched pass
    restarts = batch.observe(i, x, stats, attention_{i+1})

A restart (a policy answers "recompute from layer k") is the executor's too: the batch
narrows to the restarting requests, layers k..i run again over every position of theirs (one
batched pass per layer for all of them, inputs read back from layer k's pages), and the loop
goes on with everyone. The model only provides its pieces (`models.stack.LayerStack`).
"""

from __future__ import annotations

import torch

from vllm_elastic.engine.batch import DiffusionBatch
from vllm_elastic.kernels.step import AttentionStats, LayerContext
from vllm_elastic.models.stack import LayerStack


class StepExecutor:
    def __init__(self, batch: DiffusionBatch, stack: LayerStack) -> None:
        self.batch, self.stack = batch, stack
        self.blocks = stack.block_list()
        # The forward context's attention metadata while the step runs (vLLM's convention:
        # keyed by layer name); each entry is set just before its layer runs.
        self.contexts: dict[str, LayerContext] = {}

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Layer-0 inputs of the batch's rows -> final hidden states of its rows."""
        last = len(self.blocks) - 1
        for i in range(last + 1):
            x, stats = self._layer(i, x)
            following = self.stack.attention_of(i + 1) if i < last else None
            restarts = self.batch.observe(i, x, stats, following)
            if restarts:
                x = self._restart(i, x, restarts)
        return self.stack.final_norm(x)

    def _layer(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, AttentionStats | None]:
        attention = self.stack.attention_of(i)
        x, context = self.batch.plan_layer(i, x, attention)
        self.contexts[attention.layer_name] = context
        return self.blocks[i](context.positions, x)

    def _restart(self, layer: int, x: torch.Tensor, restarts: dict[int, int]) -> torch.Tensor:
        """Recompute, for each restarting request, layers restarts[r]..layer over every
        position (requests restarting from the same layer together); returns the batch's
        outputs of `layer` with theirs replaced."""
        everyone = self.batch.members
        parts = self.batch.split(x)
        for start in sorted(set(restarts.values())):
            self.batch.narrow([r for r in everyone if restarts.get(r) == start])
            h = self.stack.attention_of(start).read_hidden(self.batch.slot_mapping)
            for i in range(start, layer + 1):
                h, _ = self._layer(i, h)
            parts.update(self.batch.split(h))
        self.batch.widen(everyone)
        return torch.cat([parts[r] for r in everyone])
