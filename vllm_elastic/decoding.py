"""One request's denoising: the canvas, the unmasking schedule, remasking, commits.

`Canvas` is the worker-side state of one diffusion request. Each engine step the runner feeds
it the logits of its `commit_positions()` and it commits tokens by the request's schedule:

* `blocks` (LLaDA, DESIGN.md section 4): the current block's masked positions, the even top-k
  split of `steps`, or with `threshold` every position whose confidence exceeds it (at least
  the most confident one: Fast-dLLM parallel decoding);
* `window` (Elastic-Cache's sliding window): the `window_length` leftmost masked positions;
  commit every one with confidence >= min(threshold, max confidence), or the top
  `tokens_per_iter` without a threshold. Once an EOS is committed, masked positions after the
  first EOS leave the masked set (the answer is cut there anyway).

It then *releases* the newly final tokens that extend the contiguous committed prefix of the
answer: those are what vLLM's scheduler receives as this step's sampled tokens, so stock vLLM
streams them, stops at EOS or max_tokens, and frees the request. Committed tokens are never
remasked, so a released token is final. Definitions we add to LLaDA's are in `reference.py`.
"""

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


class Canvas:
    def __init__(self, prompt_ids: list[int], params: DiffusionParams, mask_id: int,
                 eos_id: int | None = None) -> None:
        self.params = params
        self.mask_id, self.eos_id = mask_id, eos_id
        self.prompt_len = len(prompt_ids)
        self.tokens = torch.tensor(prompt_ids + [mask_id] * params.gen_length, dtype=torch.long)
        self.generator = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
        self.block = 0  # blocks schedule: current block
        self.step_in_block = 0
        self.schedule = (transfer_schedule(params.block_length, params.steps_per_block)
                         if params.schedule == "blocks" else [])
        self.limit = self.length  # window schedule: masks at or after the first EOS are dropped
        self.num_released = 0  # answer tokens already handed to vLLM
        self.num_steps = 0
        self.last_committed = torch.empty(0, dtype=torch.long)

    @property
    def length(self) -> int:
        return self.tokens.shape[0]

    def masked_positions(self) -> torch.Tensor:
        """Still-masked answer positions that will be decoded, left to right."""
        answer = self.tokens[self.prompt_len: self.limit]
        return (answer == self.mask_id).nonzero()[:, 0] + self.prompt_len

    @property
    def finished(self) -> bool:
        if self.params.schedule == "window":
            return self.masked_positions().numel() == 0
        return self.block >= self.params.num_blocks

    def block_start(self) -> int:
        """blocks: start of the current block; window: start of the window_length-aligned
        chunk holding the leftmost masked position (what prefix/dual caches anchor on)."""
        if self.params.schedule == "blocks":
            return self.prompt_len + self.block * self.params.block_length
        first = int(self.masked_positions()[0]) - self.prompt_len
        w = self.params.window_length
        return self.prompt_len + first // w * w

    def anchor_length(self) -> int:
        return self.params.block_length if self.params.schedule == "blocks" else \
            self.params.window_length

    def commit_positions(self) -> torch.Tensor:
        """Canvas positions whose logits this step needs: the block, or the window."""
        if self.params.schedule == "window":
            return self.masked_positions()[: self.params.window_length]
        lo = self.block_start()
        return torch.arange(lo, lo + self.params.block_length)

    def step(self, logits: torch.Tensor) -> list[int]:
        """Commit tokens from the logits of `commit_positions()`; return the tokens released
        this step (possibly none)."""
        positions = self.commit_positions()
        x0, confidence = sample_and_score(logits, self.params, self.mask_id, self.generator)
        masked = self.tokens[positions] == self.mask_id
        confidence = confidence.masked_fill(~masked, float("-inf"))
        order = torch.sort(confidence, descending=True, stable=True).indices
        chosen = (self._choose_window(confidence, order) if self.params.schedule == "window"
                  else self._choose_block(confidence, order))
        self.tokens[positions[chosen]] = x0[chosen]
        self.last_committed = positions[chosen].sort().values
        self.num_steps += 1
        if self.params.schedule == "window":
            self._drop_masks_after_eos()
        else:
            self.step_in_block += 1
            if not bool((self.tokens[positions] == self.mask_id).any()):
                self.block += 1
                self.step_in_block = 0
        return self._release()

    def _choose_block(self, confidence: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        if self.params.threshold is not None:
            above = confidence[order[1:]] > self.params.threshold
            return torch.cat([order[:1], order[1:][above]])
        return order[: self.schedule[self.step_in_block]]

    def _choose_window(self, confidence: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        if self.params.threshold is None:
            return order[: self.params.tokens_per_iter]
        bar = min(self.params.threshold, float(confidence[order[0]]))
        return order[confidence[order] >= bar]

    def _drop_masks_after_eos(self) -> None:
        if self.eos_id is None:
            return
        eos = (self.tokens[self.prompt_len:] == self.eos_id).nonzero()
        if eos.numel():
            self.limit = min(self.limit, self.prompt_len + int(eos[0]) + 1)

    def _release(self) -> list[int]:
        answer = self.tokens[self.prompt_len:]
        still_masked = (answer == self.mask_id).nonzero()
        end = int(still_masked[0]) if still_masked.numel() else answer.shape[0]
        released = answer[self.num_released:end].tolist()
        self.num_released = max(self.num_released, end)
        return released
