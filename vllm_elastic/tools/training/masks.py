"""Which tokens a training row masks and scores beyond LLaDA's uniform masking: rows at a
decoding frontier (and where their cut falls), and rows scored on their result digits only.
The model card (examples/models/README.md) says which training runs asked for each."""

from __future__ import annotations

import argparse
import random
from typing import NamedTuple

import torch

from vllm_elastic.tools.checkpoint import EOS_ID


def frontier_rows(args: argparse.Namespace, prompt_lengths: torch.Tensor, step: int
                  ) -> torch.Tensor | None:
    """bool [B]: the rows of this batch trained at a decoding frontier (--frontier-frac; rows
    whose prompt is masked are not), or None. A pure function of (seed, step)."""
    if args.frontier_frac <= 0:
        return None
    rng = random.Random(f"frontier-{args.seed}-{step}")
    return torch.tensor([rng.random() < args.frontier_frac and int(pl) > 0
                         for pl in prompt_lengths])


def first_answer_eos(ids: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """[B]: the position of each row's first EOS at or after its prompt (L if none)."""
    n = ids.shape[1]
    pos = torch.arange(n)[None, :]
    answer_eos = (ids == EOS_ID) & (pos >= prompt_lengths[:, None])
    return torch.where(answer_eos, pos, n).min(1).values


def frontier_masks(ids: torch.Tensor, prompt_lengths: torch.Tensor, p_mask: torch.Tensor,
                   window: int, generator: torch.Generator, cuts: torch.Tensor | None = None,
                   full_window: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked, scored) [B, L] for frontier rows: what the window and blocks schedules see
    while decoding. A cut c is drawn uniformly from the answer's positions (its EOS
    included); tokens before c stay visible, the window [c, c + window) is masked at the row's
    rate p (c itself always: it is the leftmost masked position), everything after the window
    is masked. Only the window is scored. Rows where `cuts` (bool [B, L]) has a position draw
    their cut among those instead (--frontier-at-results: a result's first digit). A
    `full_window` share of the rows masks its whole window (rate 1), exactly what the window
    schedule sees right after a left-to-right commit: at rate t the model nearly always has a
    later token of the window to place the masked ones by, and decoding at threshold 0.9
    then commits wrong tokens ahead of the frontier (probe.py --lookahead measures that).

    Why: under uniform random masking an intermediate result (`13-6=7`) is usually visible
    again as the next line's operand, so a small model learns to copy it from there instead of
    computing it. Decoding left to right it never can: the next line is still masked."""
    b, n = ids.shape
    pos = torch.arange(n)[None, :]
    answer_end = first_answer_eos(ids, prompt_lengths).clamp(max=n - 1)
    span = (answer_end - prompt_lengths + 1).clamp(min=1)
    cut = prompt_lengths + (torch.rand(b, generator=generator) * span).long().clamp(max=span - 1)
    if cuts is not None and bool(cuts.any()):  # rows cut at one of their allowed positions
        chosen = cuts.any(1)
        pick = torch.multinomial(cuts[chosen].float(), 1, generator=generator)[:, 0]
        cut = cut.clone()
        cut[chosen] = pick
    in_window = (pos >= cut[:, None]) & (pos < cut[:, None] + window)
    draw = torch.rand(b, n, generator=generator) < p_mask
    if full_window > 0:  # drawn only when asked, so older runs replay their masks exactly
        draw = draw | (torch.rand(b, generator=generator) < full_window)[:, None]
    scored = in_window & (draw | (pos == cut[:, None]))
    return scored | (pos >= cut[:, None] + window), scored


class ArithTokens(NamedTuple):
    digits: torch.Tensor  # ids of the tokens "0".."9"
    equals: int           # "="
    hashes: int           # "####"
    space: int            # " " (between "####" and the answer)
    newline: int          # "\n" (between the answer's lines)
    letters: torch.Tensor  # ids of the tokens with a letter in them (words and word pieces)


def arith_tokens(tokenizer) -> ArithTokens:
    """The token ids result_digits, line_starts and prompt_copies look for (the tokenizer
    splits digits one per token)."""
    text = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    one = {t: i for i, t in enumerate(text)}
    letters = [i for i, t in enumerate(text) if any(c.isalpha() for c in t)]
    return ArithTokens(torch.tensor([one[str(d)] for d in range(10)]), one["="], one["####"],
                       one[" "], one["\n"], torch.tensor(letters))


def result_digits(ids: torch.Tensor, prompt_lengths: torch.Tensor, tokens: ArithTokens
                  ) -> torch.Tensor:
    """bool [B, L]: the answer's result digits, i.e. every digit whose nearest non-digit token
    before it is "=" or "####" (or the space after "####"): `32` in `36-4=32`, `60` in
    `#### 60`; operands are not results."""
    b, n = ids.shape
    pos = torch.arange(n)[None, :].expand(b, n)
    is_digit = torch.isin(ids, tokens.digits)
    last = torch.where(is_digit, -1, pos).cummax(1).values.clamp(min=0)
    before = ids.gather(1, last)
    before2 = ids.gather(1, (last - 1).clamp(min=0))
    opens = ((before == tokens.equals) | (before == tokens.hashes)
             | ((before == tokens.space) & (before2 == tokens.hashes)))
    return is_digit & opens & (pos >= prompt_lengths[:, None])


def result_starts(ids: torch.Tensor, prompt_lengths: torch.Tensor, tokens: ArithTokens
                  ) -> torch.Tensor:
    """bool [B, L]: the first digit of every result (see result_digits)."""
    digits = result_digits(ids, prompt_lengths, tokens)
    after_digit = torch.zeros_like(digits)
    after_digit[:, 1:] = torch.isin(ids[:, :-1], tokens.digits)
    return digits & ~after_digit


def line_starts(ids: torch.Tensor, prompt_lengths: torch.Tensor, tokens: ArithTokens
                ) -> torch.Tensor:
    """bool [B, L]: the first token of every answer line (the answer's first token and every
    token after a "\\n") and the answer's first EOS (where the last line stops); the padding
    EOS after it are not lines."""
    n = ids.shape[1]
    pos = torch.arange(n)[None, :]
    after_newline = torch.zeros_like(ids, dtype=torch.bool)
    after_newline[:, 1:] = ids[:, :-1] == tokens.newline
    starts = (after_newline & (pos > prompt_lengths[:, None])) | (pos == prompt_lengths[:, None])
    first_eos = first_answer_eos(ids, prompt_lengths)
    return (starts & (pos < first_eos[:, None])) | (pos == first_eos[:, None])


def prompt_copies(ids: torch.Tensor, prompt_lengths: torch.Tensor, tokens: ArithTokens
                  ) -> torch.Tensor:
    """bool [B, L]: the answer's word tokens (a letter in them) that also occur in the row's
    prompt, before the answer's first EOS: the name, the verb of day k, the k-th shop item, the
    container and unit, which the answer copies from the prompt's events."""
    b, n = ids.shape
    pos = torch.arange(n)[None, :]
    in_prompt = pos < prompt_lengths[:, None]
    seen = torch.zeros(b, int(ids.max()) + 1, dtype=torch.bool)  # [row, token id] in prompt
    seen[torch.arange(b)[:, None].expand(b, n)[in_prompt], ids[in_prompt]] = True
    in_answer = ~in_prompt & (pos < first_answer_eos(ids, prompt_lengths)[:, None])
    return seen.gather(1, ids) & torch.isin(ids, tokens.letters) & in_answer


def frontier_cuts(args: argparse.Namespace, ids: torch.Tensor, prompt_lengths: torch.Tensor,
                  tokens: ArithTokens | None, step: int) -> torch.Tensor | None:
    """bool [B, L]: where frontier rows put their cut, or None. The --frontier-at-results share
    of rows cut at a result's first digit (the window then opens on the arithmetic a
    left-to-right decoder must do, instead of on words ~90% of the time); the next
    --frontier-at-lines share at a line's first token (the leftmost prediction is then the
    copy of the prompt's next event, `Day 5: Dan sells 6`, or the decision to stop with
    `####`); the next --frontier-at-copies share at a word the answer copies from the prompt
    (prompt_copies: `Dan sells 9` for `loses 9`; a line cut scores such a word only when the
    window's draw masks it). The rest keep the uniform cut. A pure function of (seed, step)."""
    shares = (args.frontier_at_results, args.frontier_at_lines, args.frontier_at_copies)
    if max(shares) <= 0:
        return None
    rng = random.Random(f"frontier-cuts-{args.seed}-{step}")
    draws = torch.tensor([rng.random() for _ in range(len(ids))])
    bounds = torch.tensor(shares).cumsum(0)
    at_results = draws < bounds[0]
    at_lines = ~at_results & (draws < bounds[1])
    at_copies = ~at_results & ~at_lines & (draws < bounds[2])
    return ((result_starts(ids, prompt_lengths, tokens) & at_results[:, None])
            | (line_starts(ids, prompt_lengths, tokens) & at_lines[:, None])
            | (prompt_copies(ids, prompt_lengths, tokens) & at_copies[:, None]))


def result_rows(args: argparse.Namespace, kinds: tuple[str, ...], step: int
                ) -> torch.Tensor | None:
    """bool [B]: the rows of this batch trained on their results only (--results-frac of the
    `facts` rows: only there is no result repeated as a later operand, so a masked result must
    be computed, not copied), or None. A pure function of (seed, step)."""
    if args.results_frac <= 0:
        return None
    rng = random.Random(f"results-{args.seed}-{step}")
    return torch.tensor([kind == "facts" and rng.random() < args.results_frac for kind in kinds])
