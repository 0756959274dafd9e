"""Which masked positions a step may commit, and how many: one class per `schedule`.

* `blocks` (LLaDA): the current block's masked positions, the even top-k split of `steps`, or
  with `threshold` every position whose confidence exceeds it (at least the most confident:
  Fast-dLLM parallel decoding); under a model's `stop_at_eos` (LLaDA-V) only the masks before
  the first EOS, and the request ends when none are left;
* `window` (Elastic-Cache): the `window_length` leftmost masked positions;
* `dream` (Dream's diffusion_generate): every masked position, counts from its timesteps.

A schedule reads and updates the `Canvas` it is given; it holds only its own progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vllm_elastic.decoding.sampling import sample_and_score, transfer_schedule
from vllm_elastic.params import DiffusionParams

if TYPE_CHECKING:
    from vllm_elastic.decoding.canvas import Canvas


class BlocksSchedule:
    """LLaDA's semi-autoregressive blocks: the current block's masked positions, the even top-k
    split of `steps` per block, or (threshold) every position above it, at least one."""

    def __init__(self, params: DiffusionParams) -> None:
        self.params = params
        self.block = 0  # current block
        self.step_in_block = 0
        self.plan = transfer_schedule(params.block_length, params.steps_per_block)

    def finished(self, canvas: "Canvas") -> bool:
        if self.block >= self.params.num_blocks:
            return True
        # Stopping at EOS (LLaDA-V): no masks left before it ends the request's decoding.
        return canvas.rules.stop_at_eos and canvas.masked_positions().numel() == 0

    def block_start(self, canvas: "Canvas") -> int:
        return canvas.prompt_len + self.block * self.params.block_length

    def anchor_length(self) -> int:
        return self.params.block_length

    def commit_positions(self, canvas: "Canvas") -> torch.Tensor:
        lo = self.block_start(canvas)
        return torch.arange(lo, lo + self.params.block_length)

    def decide(self, canvas: "Canvas", positions: torch.Tensor, logits: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        confidence, order, x0 = _scored(canvas, positions, logits)
        order = order[torch.isfinite(confidence[order])]  # candidates only (the stop cuts)
        if self.params.threshold is not None:
            above = confidence[order[1:]] > self.params.threshold
            return torch.cat([order[:1], order[1:][above]]), x0
        return order[: self.plan[self.step_in_block]], x0

    def after_commit(self, canvas: "Canvas", positions: torch.Tensor) -> None:
        self.step_in_block += 1
        if canvas.rules.stop_at_eos:
            _stop_at_first_eos(canvas)
        if not bool(((canvas.tokens[positions] == canvas.mask_id)
                     & (positions < canvas.limit)).any()):
            self.block += 1
            self.step_in_block = 0


class WindowSchedule:
    """Elastic-Cache's sliding window: the `window_length` leftmost masked positions; commit
    every one with confidence >= min(threshold, max confidence), or the top `tokens_per_iter`
    without a threshold. At the first step that commits an EOS, masked positions after the
    first EOS leave the masked set, once (the answer is cut there anyway)."""

    def __init__(self, params: DiffusionParams) -> None:
        self.params = params

    def finished(self, canvas: "Canvas") -> bool:
        return canvas.masked_positions().numel() == 0

    def block_start(self, canvas: "Canvas") -> int:
        """Start of the window_length-aligned chunk holding the leftmost masked position
        (what the prefix and dual caches anchor on)."""
        first = int(canvas.masked_positions()[0]) - canvas.prompt_len
        w = self.params.window_length
        return canvas.prompt_len + first // w * w

    def anchor_length(self) -> int:
        return self.params.window_length

    def commit_positions(self, canvas: "Canvas") -> torch.Tensor:
        return canvas.masked_positions()[: self.params.window_length]

    def decide(self, canvas: "Canvas", positions: torch.Tensor, logits: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        confidence, order, x0 = _scored(canvas, positions, logits)
        if self.params.threshold is None:
            return order[: self.params.tokens_per_iter], x0
        bar = min(self.params.threshold, float(confidence[order[0]]))
        return order[confidence[order] >= bar], x0

    def after_commit(self, canvas: "Canvas", positions: torch.Tensor) -> None:
        # As the authors do: the masked set is cut once, at the first step that commits an
        # EOS, after the first EOS of the canvas; later EOS commits do not cut it again.
        if canvas.eos_id is None or canvas.limit < canvas.length:
            return
        eos = (canvas.tokens[canvas.prompt_len:] == canvas.eos_id).nonzero()
        if eos.numel():
            canvas.limit = canvas.prompt_len + int(eos[0]) + 1


def _stop_at_first_eos(canvas: "Canvas") -> None:
    """LLaDA-V's stop: masks at or after the answer's first EOS are no longer decoded (the
    first EOS only moves earlier as tokens are committed)."""
    eos = (canvas.tokens[canvas.prompt_len:] == canvas.eos_id).nonzero()
    if eos.numel():
        canvas.limit = min(canvas.limit, canvas.prompt_len + int(eos[0]))


def _scored(canvas: "Canvas", positions: torch.Tensor, logits: torch.Tensor):
    """LLaDA's sampling for the positions' logits: (confidence with committed positions and
    positions past the canvas's limit at -inf, positions by descending confidence (ties:
    lower first), x0)."""
    x0, confidence = sample_and_score(logits, canvas.params, canvas.mask_id, canvas.generator)
    masked = (canvas.tokens[positions] == canvas.mask_id) & (positions < canvas.limit)
    confidence = confidence.masked_fill(~masked, float("-inf"))
    return confidence, torch.sort(confidence, descending=True, stable=True).indices, x0


class DreamSchedule:
    """Dream's `diffusion_generate`: every masked position is a candidate at every step; the
    timesteps linspace(1, eps, steps + 1) set how many are committed (see dream_sampling.py)."""

    def __init__(self, params: DiffusionParams) -> None:
        self.params = params
        self.step_index = 0

    def finished(self, canvas: "Canvas") -> bool:
        return canvas.masked_positions().numel() == 0

    def block_start(self, canvas: "Canvas") -> int:
        return canvas.prompt_len  # one block: the whole answer

    def anchor_length(self) -> int:
        return self.params.gen_length

    def commit_positions(self, canvas: "Canvas") -> torch.Tensor:
        return canvas.masked_positions()

    def decide(self, canvas: "Canvas", positions: torch.Tensor, logits: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        from vllm_elastic.decoding.dream_sampling import dream_step

        chosen, x0 = dream_step(logits, self.params, self.step_index, canvas.mask_id,
                                canvas.generator)
        self.step_index += 1
        return chosen, x0

    def after_commit(self, canvas: "Canvas", positions: torch.Tensor) -> None:
        pass


SCHEDULES = {"blocks": BlocksSchedule, "window": WindowSchedule, "dream": DreamSchedule}
