"""The step's executor owns the layer loop (no model, no vLLM engine): each layer reads the
context the batch planned, under its own name, and returns its statistics to the executor;
a restart reruns layers start..i over the restarting requests only, then everyone goes on."""

from __future__ import annotations

import torch
from torch import nn

from vllm_elastic.engine.executor import StepExecutor
from vllm_elastic.kernels.step import AttentionStats, LayerContext

LAYERS = 4


class Attention:
    def __init__(self, i: int) -> None:
        self.layer_name = f"layers.{i}.attn"
        self.index = i

    def read_hidden(self, slots: torch.Tensor) -> torch.Tensor:
        # A restart's inputs, read back from the pages: marked so the test can tell them.
        return torch.full((slots.numel(), 1), 1000.0 * self.index)


class Block(nn.Module):
    """Adds 1 to every row; records the context it saw (as attention would read it)."""

    def __init__(self, executor_of, i: int) -> None:
        super().__init__()
        self.executor_of, self.i = executor_of, i
        self.seen: list[LayerContext] = []

    def forward(self, positions: torch.Tensor, x: torch.Tensor):
        context = self.executor_of().contexts[f"layers.{self.i}.attn"]
        assert torch.equal(context.positions, positions)
        self.seen.append(context)
        return x + 1, AttentionStats([None], torch.zeros(1, 1))


class Stack:
    def __init__(self, executor_of) -> None:
        self.blocks = [Block(executor_of, i) for i in range(LAYERS)]
        self.attention = [Attention(i) for i in range(LAYERS)]

    def block_list(self):
        return self.blocks

    def attention_of(self, i: int) -> Attention:
        return self.attention[i]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return -x


class Batch:
    """Two requests of 2 rows each; request 1 asks for a restart from layer 1 at layer 2."""

    def __init__(self) -> None:
        self.members = [0, 1]
        self.rows = {0: 2, 1: 2}
        self.log: list[tuple] = []
        self.following: list = []

    @property
    def slot_mapping(self) -> torch.Tensor:
        return torch.arange(sum(self.rows[r] for r in self.members))

    def plan_layer(self, i, x, attn):
        self.log.append(("plan", i, tuple(self.members)))
        n = x.shape[0]
        return x, LayerContext(torch.arange(n) + 10 * i, torch.arange(n), None, None)

    def observe(self, i, x, stats, following):
        assert isinstance(stats, AttentionStats)  # what the layer returned
        self.following.append(following)
        self.log.append(("observe", i))
        return {1: 1} if i == 2 else {}

    def split(self, x):
        out, start = {}, 0
        for r in self.members:
            out[r] = x[start: start + self.rows[r]]
            start += self.rows[r]
        return out

    def narrow(self, group):
        self.log.append(("narrow", tuple(group)))
        self.members = group

    def widen(self, everyone):
        self.log.append(("widen", tuple(everyone)))
        self.members = everyone


def test_executor_runs_each_layer_with_its_context_and_restarts_only_the_restarting_group():
    batch = Batch()
    executor = None
    stack = Stack(lambda: executor)
    executor = StepExecutor(batch, stack)
    out = executor.run(torch.zeros(4, 1))
    assert batch.log == [
        ("plan", 0, (0, 1)), ("observe", 0), ("plan", 1, (0, 1)), ("observe", 1),
        ("plan", 2, (0, 1)), ("observe", 2),
        ("narrow", (1,)), ("plan", 1, (1,)), ("plan", 2, (1,)), ("widen", (0, 1)),
        ("plan", 3, (0, 1)), ("observe", 3)]
    # Request 0 went through 4 layers from 0; request 1 restarted at layer 1 from its stored
    # inputs (1000), reran layers 1 and 2, then layer 3: the final norm negates.
    assert out.flatten().tolist() == [-4, -4, -1003, -1003]
    # observe gets the next layer's attention (its pages hold the sentinels' cached inputs).
    assert batch.following == [stack.attention[1], stack.attention[2], stack.attention[3], None]
    # Every layer read a context under its own name, with the rows the batch planned.
    assert [len(b.seen) for b in stack.blocks] == [1, 2, 2, 1]
    assert stack.blocks[1].seen[1].positions.tolist() == [10, 11]  # the narrowed batch
