"""The Elastic-Cache drift statistic computed inside DiffusionAttention."""

import torch
import torch.nn.functional as F

from vllm_elastic.attention import head_axis_similarity


def _same(t: torch.Tensor) -> torch.Tensor:
    return t  # one rank: nothing to sum over


def _attention(heads: int, n: int, length: int, sharpness: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharpness * torch.randn(heads, n, length, generator=g), dim=-1)


def test_equals_torch_cosine_over_heads_on_sharp_attention():
    # Sharp attention leaves most keys with weights far below 1e-4 in every head: exactly
    # where clamping the product of the norms (instead of each norm) went wrong.
    old = _attention(2, 3, 200, sharpness=3.0, seed=0)
    new = (old * (1 + 0.01 * _attention(2, 3, 200, 1.0, seed=1))).clamp_min(0)
    new = new / new.sum(-1, keepdim=True)
    assert (old < 1e-4).float().mean() > 0.5
    expected = float(F.cosine_similarity(new, old, dim=0).mean())
    assert abs(head_axis_similarity(new, old, _same) - expected) < 1e-6
    assert head_axis_similarity(new, old, _same) > 0.99


def test_identical_rows_score_one_and_disagreeing_heads_score_low():
    old = _attention(4, 2, 50, sharpness=2.0, seed=2)
    assert abs(head_axis_similarity(old, old, _same) - 1.0) < 1e-6
    swapped = old.flip(0)  # heads exchange their patterns
    assert head_axis_similarity(swapped, old, _same) < head_axis_similarity(old, old, _same) - 0.05
