"""The layer loop every diffusion model shares: a straight line per layer, with the step's
batch carrying out the cache plans around it (engine/batch.py implements `LayerLoop`).
Models differ only in their blocks."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import nn

from vllm.forward_context import get_forward_context, is_forward_context_available
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, RowParallelLinear

from vllm_elastic.kernels.step import AttentionStep

# rerun(start, last, slots, positions): layers start..last again over the batch as it stands.
Rerun = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]


class LayerLoop(AttentionStep):
    """A step's batch as the layer loop drives it: around each layer it carries out every
    request's cache plan (which rows enter, what is stored, what restarts)."""

    @abstractmethod
    def enter_layer(self, layer: int, x: torch.Tensor, attn: nn.Module
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Carry out every request's plan for `layer`; returns (x, positions)."""

    @abstractmethod
    def leave_layer(self, layer: int, x: torch.Tensor, rerun: Rerun,
                    next_attn: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hand the layer's statistics to the policies and carry out restarts; `next_attn`
        is the next layer's attention (None after the last)."""


def current_batch() -> LayerLoop | None:
    """This step's batch, or None in vLLM's dummy/profiling runs (plain bidirectional pass)."""
    batch = get_forward_context().attn_metadata if is_forward_context_available() else None
    return batch if isinstance(batch, LayerLoop) else None


def run_layers(blocks: Sequence[nn.Module], x: torch.Tensor, positions: torch.Tensor,
               attention_of: Callable[[nn.Module], nn.Module]) -> torch.Tensor:
    """x through every block (`block(positions, x)`); `attention_of(block)` is its
    DiffusionAttention layer (the pages that hold its cached inputs)."""
    batch = current_batch()
    if batch is None:
        for block in blocks:
            x = block(positions, x)
        return x

    def rerun(start: int, last: int, slots: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        # A restart: layers start..last again over every position of the batch's (narrowed)
        # requests, inputs read back from layer `start`'s pages.
        h = attention_of(blocks[start]).read_hidden(slots)
        for i in range(start, last + 1):
            h, pos = batch.enter_layer(i, h, attention_of(blocks[i]))
            h = blocks[i](pos, h)
        return h

    for i, block in enumerate(blocks):
        x, positions = batch.enter_layer(i, x, attention_of(block))
        x = block(positions, x)
        following = attention_of(blocks[i + 1]) if i + 1 < len(blocks) else None
        x, positions = batch.leave_layer(i, x, rerun, following)
    return x


# On CPU the feed-forward sublayer runs a batch's rows in chunks of at most this many MLP
# activations (gate and up: 8 MiB in fp32), so its elementwise work stays in the CPU's cache.
CPU_FEED_FORWARD_CHUNK = 1 << 21


def add_feed_forward(x: torch.Tensor, norm: nn.Module, mlp: "GatedMLP") -> torch.Tensor:
    """x + mlp(norm(x)). On CPU a large batch (many canvases at once) goes through in row
    chunks written in place: in one call the norm, activation and residual tensors of the
    whole batch fall out of the cache and each row costs more than in a request of its own.
    GPUs keep one call (large matmuls are what they are good at)."""
    rows = max(1, CPU_FEED_FORWARD_CHUNK // (2 * mlp.size))
    if not x.is_cpu or x.shape[0] <= rows:
        return x + mlp(norm(x))
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], rows):
        chunk = x[start: start + rows]
        torch.add(chunk, mlp(norm(chunk)), out=out[start: start + rows])
    return out


class GatedMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up fused, sharded over TP ranks."""

    def __init__(self, hidden: int, size: int, bias: bool, prefix: str) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden, [size, size], bias=bias,
                                                       prefix=f"{prefix}.gate_up_proj")
        self.down_proj = RowParallelLinear(size, hidden, bias=bias, prefix=f"{prefix}.down_proj")
        self.act = SiluAndMul()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        out, _ = self.down_proj(self.act(gate_up))
        return out
