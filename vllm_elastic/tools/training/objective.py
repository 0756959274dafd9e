"""LLaDA's SFT objective with the trainer's masking options, and the learning-rate schedule.

The prompt is never masked; every answer token, including the EOS padding after the answer, is
replaced by MASK with probability p = (1-eps)*t + eps, t ~ U(0, 1) per example; cross-entropy
on masked positions weighted by 1/p and normalised by the example's answer length, averaged
over the batch. Frontier and result rows (masks.py) replace that per row.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from vllm_elastic.oracles.llada import ReferenceLLaDA
from vllm_elastic.tools.checkpoint import MASK_ID
from vllm_elastic.tools.training.masks import frontier_masks


def sft_loss(model: ReferenceLLaDA, ids: torch.Tensor, prompt_lengths: torch.Tensor,
             eps: float, generator: torch.Generator, frontier: torch.Tensor | None = None,
             window: int = 32, results: torch.Tensor | None = None,
             cuts: torch.Tensor | None = None, full_window: float = 0.0) -> torch.Tensor:
    """LLaDA's SFT loss (see the module docstring); rows in `frontier` (bool [B]) are masked
    and scored by frontier_masks instead, their loss the mean cross-entropy of the window's
    masked tokens; rows where `results` (bool [B, L]) has a position are masked and scored
    exactly there (mean cross-entropy), whatever else applied to them. `cuts`, `full_window`:
    see frontier_masks."""
    b, n = ids.shape
    pos = torch.arange(n)[None, :]
    is_answer = pos >= prompt_lengths[:, None]
    t = torch.rand(b, generator=generator)
    p_mask = ((1 - eps) * t + eps)[:, None].expand(b, n)
    masked = (torch.rand(b, n, generator=generator) < p_mask) & is_answer
    # Per-token weight: 1/p normalised by the answer length (LLaDA's), or 1/count (frontier).
    weight = 1.0 / (p_mask * is_answer.sum(1, keepdim=True))
    if frontier is not None and bool(frontier.any()):
        f_masked, f_scored = frontier_masks(ids, prompt_lengths, p_mask, window, generator,
                                            cuts, full_window)
        rows = frontier[:, None]
        masked = torch.where(rows, f_masked, masked)
        f_weight = 1.0 / f_scored.sum(1, keepdim=True).clamp(min=1)
        weight = torch.where(rows, torch.where(f_scored, f_weight, 0.0), weight)
    if results is not None and bool(results.any()):
        rows = results.any(1, keepdim=True)
        masked = torch.where(rows, results, masked)
        r_weight = 1.0 / results.sum(1, keepdim=True).clamp(min=1)
        weight = torch.where(rows, torch.where(results, r_weight, 0.0), weight)
    noisy = torch.where(masked, torch.full_like(ids, MASK_ID), ids)
    logits = model(noisy)
    token_loss = F.cross_entropy(logits[masked], ids[masked], reduction="none")
    return (token_loss * weight[masked]).sum() / b


def lr_at(args: argparse.Namespace, step: int, progress: float, warmup_from: int = 0) -> float:
    """Linear warmup over --warmup steps counted from `warmup_from` (the first step of a
    weights-only continuation, whose optimizer starts fresh), then flat, then a linear decay to
    10% over the last --decay-frac of the budget."""
    warm = min(1.0, (step - warmup_from + 1) / max(1, args.warmup))
    start = 1.0 - args.decay_frac
    decay = 1.0 if progress < start else max(0.1, 1.0 - 0.9 * (progress - start) / args.decay_frac)
    return args.lr * warm * decay
