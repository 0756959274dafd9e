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
remasked, so a released token is final. Definitions we add to LLaDA's are in `oracles/llada.py`.

A model family may restrict what is sampled (`TokenRules`): LLaDA-V's official decoding forces
some ids to -inf at masked positions, never produces ids beyond its tokenizer, and stops at
`<|eot_id|>` (`stop_at_eos`: from the first EOS on, only masks before it are decoded, and the
`blocks` schedule ends when none are left, as LLaDA-V's `generate_with_embeds` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_elastic.decoding.schedules import SCHEDULES
from vllm_elastic.params import DiffusionParams


@dataclass(frozen=True)
class TokenRules:
    """What a model family's decoding may sample (defaults: everything, LLaDA's and Dream's)."""

    banned_ids: tuple[int, ...] = ()  # forced to -inf in every logit row
    vocab_limit: int | None = None  # ids at or above it are forced to -inf
    stop_at_eos: bool = False  # the first EOS ends decoding of the positions after it

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.banned_ids and self.vocab_limit is None:
            return logits
        logits = logits.clone()
        logits[:, list(self.banned_ids)] = float("-inf")
        if self.vocab_limit is not None:
            logits[:, self.vocab_limit:] = float("-inf")
        return logits


class Canvas:
    def __init__(self, prompt_ids: list[int], params: DiffusionParams, mask_id: int,
                 eos_id: int | None = None, logit_shift: int = 0,
                 rules: TokenRules = TokenRules()) -> None:
        self.params = params
        self.rules = rules
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
        chosen, x0 = self.schedule.decide(self, positions, self.rules.restrict(logits))
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
