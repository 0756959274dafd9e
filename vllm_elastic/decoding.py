"""One request's denoising: the canvas, the unmasking schedule, remasking, commits.

`Canvas` is the worker-side state of one diffusion request. Each engine step the runner feeds
it the logits of its `logit_rows()` (its commit positions, shifted back by one for Dream) and
it commits tokens by the request's schedule:

* `blocks` (LLaDA, `BlocksSchedule`): the current block's masked positions, the even top-k
  split of `steps`, or with `threshold` every position whose confidence exceeds it (at least
  the most confident one: Fast-dLLM parallel decoding);
* `window` (Elastic-Cache's sliding window, `WindowSchedule`): the `window_length` leftmost
  masked positions; commit every one with confidence >= min(threshold, max confidence), or
  the top `tokens_per_iter` without a threshold. At the first step that commits an EOS, masked
  positions after the first EOS leave the masked set, once (the answer is cut there anyway);
* `dream` (Dream's diffusion_generate, `DreamSchedule`): every masked position, the number
  committed per step from Dream's timestep schedule, chosen by its `alg` (dream_sampling.py).

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


class BlocksSchedule:
    """LLaDA's semi-autoregressive blocks: the current block's masked positions, the even top-k
    split of `steps` per block, or (threshold) every position above it, at least one."""

    def __init__(self, params: DiffusionParams) -> None:
        self.params = params
        self.block = 0  # current block
        self.step_in_block = 0
        self.plan = transfer_schedule(params.block_length, params.steps_per_block)

    def finished(self, canvas: "Canvas") -> bool:
        return self.block >= self.params.num_blocks

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
        if self.params.threshold is not None:
            above = confidence[order[1:]] > self.params.threshold
            return torch.cat([order[:1], order[1:][above]]), x0
        return order[: self.plan[self.step_in_block]], x0

    def after_commit(self, canvas: "Canvas", positions: torch.Tensor) -> None:
        self.step_in_block += 1
        if not bool((canvas.tokens[positions] == canvas.mask_id).any()):
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


def _scored(canvas: "Canvas", positions: torch.Tensor, logits: torch.Tensor):
    """LLaDA's sampling for the positions' logits: (confidence with committed positions at
    -inf, positions by descending confidence (ties: lower first), x0)."""
    x0, confidence = sample_and_score(logits, canvas.params, canvas.mask_id, canvas.generator)
    masked = canvas.tokens[positions] == canvas.mask_id
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
        from vllm_elastic.dream_sampling import dream_step

        chosen, x0 = dream_step(logits, self.params, self.step_index, canvas.mask_id,
                                canvas.generator)
        self.step_index += 1
        return chosen, x0

    def after_commit(self, canvas: "Canvas", positions: torch.Tensor) -> None:
        pass


SCHEDULES = {"blocks": BlocksSchedule, "window": WindowSchedule, "dream": DreamSchedule}


class Canvas:
    def __init__(self, prompt_ids: list[int], params: DiffusionParams, mask_id: int,
                 eos_id: int | None = None, logit_shift: int = 0) -> None:
        self.params = params
        self.logit_shift = logit_shift  # 1 for Dream: position q is predicted by row q - 1
        self.mask_id, self.eos_id = mask_id, eos_id
        self.prompt_len = len(prompt_ids)
        self.tokens = torch.tensor(prompt_ids + [mask_id] * params.gen_length, dtype=torch.long)
        self.generator = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
        self.schedule = SCHEDULES[params.schedule](params)
        self.limit = self.length  # masked positions at or after it are not decoded
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
        return self.schedule.finished(self)

    def block_start(self) -> int:
        return self.schedule.block_start(self)

    def anchor_length(self) -> int:
        return self.schedule.anchor_length()

    def commit_positions(self) -> torch.Tensor:
        """Canvas positions whose logits this step needs: the block, or the window."""
        return self.schedule.commit_positions(self)

    def logit_rows(self) -> torch.Tensor:
        """The output rows whose logits this step reads: the commit positions, shifted back by
        one for a shifted-logit model (Dream), whose first answer position is predicted by the
        prompt's last row. Cache policies must compute these rows."""
        return self.commit_positions() - self.logit_shift

    def step(self, logits: torch.Tensor) -> list[int]:
        """Commit tokens from the logits of `logit_rows()` (one row per commit position);
        return the tokens released this step (possibly none)."""
        positions = self.commit_positions()
        chosen, x0 = self.schedule.decide(self, positions, logits)
        self.tokens[positions[chosen]] = x0[chosen]
        self.last_committed = positions[chosen].sort().values
        self.num_steps += 1
        self.schedule.after_commit(self, positions)
        return self._release()

    def _release(self) -> list[int]:
        answer = self.tokens[self.prompt_len:]
        still_masked = (answer == self.mask_id).nonzero()
        end = int(still_masked[0]) if still_masked.numel() else answer.shape[0]
        released = answer[self.num_released:end].tolist()
        self.num_released = max(self.num_released, end)
        return released
