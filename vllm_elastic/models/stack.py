"""What every diffusion model's inner stack shows the step's executor: its embedding, its
layers (each `layer(positions, x) -> (x, statistics)`), each layer's attention (the pages that
hold its cached inputs) and the final norm. The executor (engine/executor.py) owns the layer
loop; a model's own `forward` is the plain pass vLLM's profiling and dummy runs make. Models
differ only in their blocks."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, RowParallelLinear

from vllm_elastic.kernels.attention import DiffusionAttention
from vllm_elastic.kernels.step import AttentionStats

LayerOutput = tuple[torch.Tensor, AttentionStats | None]


class LayerStack(nn.Module):
    """A diffusion model's embedding, layers and final norm."""

    @abstractmethod
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Layer-0 inputs of the given ids."""

    @abstractmethod
    def block_list(self) -> Sequence[nn.Module]:
        """The blocks in order; `block(positions, x) -> (x, attention statistics or None)`."""

    @abstractmethod
    def attention_of(self, layer: int) -> DiffusionAttention:
        """The attention layer of block `layer`."""

    @abstractmethod
    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The norm after the last block."""

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """A plain bidirectional pass (vLLM's profiling and dummy runs; a diffusion step goes
        through the executor instead)."""
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        for block in self.block_list():
            x, _ = block(positions, x)
        return self.final_norm(x)


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
