"""models/stack.py: the feed-forward sublayer in row chunks equals it in one call."""

import torch
from torch import nn

from vllm_elastic.models import stack


class ToyMLP(nn.Module):
    """Stands in for GatedMLP (which needs vLLM's tensor-parallel state): same `size`."""

    def __init__(self, hidden: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.up, self.down = nn.Linear(hidden, 2 * size), nn.Linear(size, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.up(x).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)


def test_chunked_feed_forward_equals_one_call(monkeypatch):
    torch.manual_seed(0)
    mlp, norm = ToyMLP(16, 24), nn.LayerNorm(16)
    x = torch.randn(103, 16)
    monkeypatch.setattr(stack, "CPU_FEED_FORWARD_CHUNK", 2 * 24 * 10)  # 10 rows a chunk
    calls = []
    with torch.no_grad():  # inference, as in the engine (out= takes no autograd)
        whole = x + mlp(norm(x))
        mlp.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
        chunked = stack.add_feed_forward(x, norm, mlp)
    assert calls == [10] * 10 + [3]
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


def test_small_batches_run_in_one_call():
    mlp, norm = ToyMLP(16, 24), nn.LayerNorm(16)
    calls = []
    mlp.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    stack.add_feed_forward(torch.randn(50, 16), norm, mlp)
    assert calls == [50]
