"""One request's denoising: the canvas, the unmasking schedule, remasking, threshold commits.

`Canvas` is the worker-side state of one diffusion request. Each engine step the runner feeds
it the logits of its current block (`query_positions`) and it commits tokens by LLaDA's rules
(DESIGN.md section 4; the two definitions we add are in `reference.py`'s docstring). It then
*releases* the newly final tokens that extend the contiguous committed prefix of the answer:
those are what vLLM's scheduler receives as this step's sampled tokens, so stock vLLM streams
them, stops at EOS or max_tokens, and frees the request. Committed tokens are never remasked,
so a released token is final.
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


class Canvas:
    def __init__(self, prompt_ids: list[int], params: DiffusionParams, mask_id: int) -> None:
        self.params = params
        self.mask_id = mask_id
        self.prompt_len = len(prompt_ids)
        self.tokens = torch.tensor(prompt_ids + [mask_id] * params.gen_length, dtype=torch.long)
        self.generator = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
        self.block = 0
        self.step_in_block = 0
        self.schedule = transfer_schedule(params.block_length, params.steps_per_block)
        self.num_released = 0  # answer tokens already handed to vLLM
        self.num_steps = 0

    @property
    def length(self) -> int:
        return self.tokens.shape[0]

    @property
    def finished(self) -> bool:
        return self.block >= self.params.num_blocks

    def query_positions(self) -> range:
        """Canvas positions whose logits this step needs: the current block."""
        lo = self.prompt_len + self.block * self.params.block_length
        return range(lo, lo + self.params.block_length)

    def step(self, logits: torch.Tensor) -> list[int]:
        """Commit tokens from the current block's logits [block_length, vocab]; return the
        tokens released this step (possibly none)."""
        p = self.params
        block_tokens = self.tokens[self.query_positions().start:][: p.block_length]
        masked = block_tokens == self.mask_id
        logits = logits.double()
        logits[:, self.mask_id] = float("-inf")
        if p.temperature > 0:
            noise = torch.rand(logits.shape, dtype=torch.float64, generator=self.generator)
            x0 = (logits - p.temperature * torch.log(-torch.log(noise))).argmax(-1)
        else:
            x0 = logits.argmax(-1)
        if p.remasking == "low_confidence":
            confidence = F.softmax(logits, dim=-1).gather(-1, x0[:, None])[:, 0]
        else:
            confidence = torch.rand(p.block_length, dtype=torch.float64, generator=self.generator)
        confidence = confidence.masked_fill(~masked, float("-inf"))
        order = torch.sort(confidence, descending=True, stable=True).indices
        if p.threshold is not None:
            above = confidence[order[1:]] > p.threshold
            chosen = torch.cat([order[:1], order[1:][above]])
        else:
            chosen = order[: self.schedule[self.step_in_block]]
        block_tokens[chosen] = x0[chosen]  # a view: writes into self.tokens
        self.num_steps += 1
        self.step_in_block += 1
        if not bool((block_tokens == self.mask_id).any()):
            self.block += 1
            self.step_in_block = 0
        return self._release()

    def _release(self) -> list[int]:
        answer = self.tokens[self.prompt_len:]
        still_masked = (answer == self.mask_id).nonzero()
        end = int(still_masked[0]) if still_masked.numel() else answer.shape[0]
        released = answer[self.num_released:end].tolist()
        self.num_released = max(self.num_released, end)
        return released
