"""LLaDA's sampling for one step's logits: the per-block transfer counts and each row's
token and confidence (Gumbel noise from the request's own generator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm_elastic.params import DiffusionParams


def transfer_schedule(num_masked: int, steps: int) -> list[int]:
    """Tokens committed at each step of a block: an even split, the first
    `num_masked % steps` steps taking one more (LLaDA's get_num_transfer_tokens)."""
    base, remainder = divmod(num_masked, steps)
    return [base + (1 if i < remainder else 0) for i in range(steps)]


def sample_and_score(logits: torch.Tensor, params: DiffusionParams, mask_id: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 (a token per row) and its confidence, drawing noise from the request's generator."""
    logits = logits.double()
    logits[:, mask_id] = float("-inf")
    if params.temperature > 0:
        noise = torch.rand(logits.shape, dtype=torch.float64, generator=generator)
        x0 = (logits - params.temperature * torch.log(-torch.log(noise))).argmax(-1)
    else:
        x0 = logits.argmax(-1)
    if params.remasking == "low_confidence":
        confidence = F.softmax(logits, dim=-1).gather(-1, x0[:, None])[:, 0]
    else:
        confidence = torch.rand(logits.shape[0], dtype=torch.float64, generator=generator)
    return x0, confidence
