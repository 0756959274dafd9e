"""The Elastic-Cache drift statistic computed inside DiffusionAttention."""

import torch
import torch.nn.functional as F

from vllm_elastic.kernels.attention import head_axis_similarity


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
    assert abs(head_axis_similarity(new, old, reduce=_same) - expected) < 1e-6
    assert head_axis_similarity(new, old, reduce=_same) > 0.99


def test_identical_rows_score_one_and_disagreeing_heads_score_low():
    old = _attention(4, 2, 50, sharpness=2.0, seed=2)
    assert abs(head_axis_similarity(old, old, reduce=_same) - 1.0) < 1e-6
    swapped = old.flip(0)  # heads exchange their patterns
    assert head_axis_similarity(swapped, old, reduce=_same) < head_axis_similarity(old, old, reduce=_same) - 0.05


def test_min_weight_leaves_out_keys_nobody_attends_to():
    # Attention this sharp puts many keys below 1e-8 in every head: torch's cosine scores them
    # ~0 although nothing moved, so the authors' mean falls far below any gamma.
    old = _attention(2, 1, 200, sharpness=8.0, seed=3)
    negligible = (old.norm(dim=0) < 1e-8).float().mean()
    assert negligible > 0.2
    as_computed = head_axis_similarity(old, old, reduce=_same)
    assert as_computed < 1 - 0.8 * float(negligible)  # identical rows, yet far below 1
    kept = head_axis_similarity(old, old, min_weight=1e-6, reduce=_same)
    assert abs(kept - 1.0) < 1e-5
    # A head swap on the attended keys still shows with the floor.
    assert head_axis_similarity(old.flip(0), old, min_weight=1e-6, reduce=_same) < 0.9
