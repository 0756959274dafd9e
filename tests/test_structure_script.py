"""benchmarks/structure.py: its traced forward is the reference forward, and it measures."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import structure  # noqa: E402


def test_traced_forward_equals_reference_forward(reference):
    ids = torch.tensor([2, 3, 100, 4] + [reference.config.mask_token_id] * 12)
    logits, traces = structure.traced_forward(reference, ids)
    with torch.no_grad():
        expected = reference(ids[None])[0]
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-3)
    assert len(traces) == reference.config.n_layers
    probs = traces[0].probs
    assert probs.shape == (reference.config.n_heads, 16, 16)
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:2]), atol=1e-5)


def test_decode_and_trace_collects_every_layer(reference):
    c = structure.Collector(reference.config.n_layers, max_distance=8)
    steps = structure.decode_and_trace(reference, [2, 3, 100, 4], 24, c)
    assert steps >= 2
    for layer in range(reference.config.n_layers):
        assert len(c.sim_torch[layer]) == steps - 1
        assert all(0.0 <= s <= 1.0 + 1e-6 for s in c.sim_floor[layer])
        assert len(c.drift["prompt"][layer]) == steps - 1
    # Layer 0's K of a token whose input did not change does not move (only rounding).
    assert max(c.drift["prompt"][0]) < 1e-6
