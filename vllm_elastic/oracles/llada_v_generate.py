"""LLaDA-V's decoding: the official `generate_with_embeds`, with no cache (the oracle of `none`).

Followed from ML-GSAI/LLaDA-V `modeling_llada.py` (LLaDAModelLM.generate_with_embeds): the
canvas is the merged prompt embeddings (images included, computed once) followed by
gen_length MASK embeddings, the whole canvas through the LM every step, and
  * blocks left to right, `steps // num_blocks` steps each, the even top-k split of LLaDA;
  * at masked positions the suppressed ids (<|endoftext|>, <|startoftext|>,
    <|start_header_id|>, <|end_header_id|>) get -inf logits, so the answer never holds EOS;
    ids at or above `sampled_vocab_size` too (the official loader trims the embedding table
    to the tokenizer's length, so they do not exist there);
  * after each step the generated part is scanned for the stop sequences (default
    <|eot_id|>); from the first match on, only masks before the earliest stop are decoded (in
    this block: the schedule's later blocks are skipped), and decoding ends when none are left;
  * the answer is the canvas before the stop (the stop excluded), or the whole canvas.
Two conventions are ours, shared with the LLaDA oracle and the vLLM worker
(decoding/sampling.py): the MASK id is never committed (the official code may commit it and
then re-decode that position), and noise comes from a generator seeded with the request's
seed. Where the official code's top-k would pad with -inf positions (fewer candidates before
the stop than the schedule's count) we commit only the candidates; the padding lands at or
after the stop, which the answer never includes. `threshold` (Fast-dLLM) selects inside the
same candidates; CFG and generation suffixes are not implemented.
"""

from __future__ import annotations

import torch

from vllm_elastic.decoding.sampling import sample_and_score, transfer_schedule
from vllm_elastic.params import DiffusionParams


def update_stop(tokens: torch.Tensor, stops: list[list[int]], stop: int | None) -> int | None:
    """The stop position after a step, scanned as the official code does: the stop sequences
    in order, each at its first match, moving the stop only earlier; once a stop is known the
    scan ends after the sequence that found it (or the first, on later steps)."""
    for seq in stops:
        for start in range(tokens.shape[0] - len(seq) + 1):
            if tokens[start: start + len(seq)].tolist() == seq:
                stop = start if stop is None else min(stop, start)
                break
        if stop is not None:
            break
    return stop


def _restrict_logits(logits: torch.Tensor, config) -> torch.Tensor:
    """The official forbidden ids and the trimmed vocabulary at -inf (rows are all masked
    positions or discarded)."""
    logits = logits.clone()
    logits[:, config.suppressed_token_ids] = float("-inf")
    if config.sampled_vocab_size is not None:
        logits[:, config.sampled_vocab_size:] = float("-inf")
    return logits


def _choose(conf: torch.Tensor, candidates: torch.Tensor, count: int,
            threshold: float | None) -> list[int]:
    """Rows to commit: the `count` most confident candidates (ties to the lower position),
    or with a threshold the most confident one and every other above it."""
    conf = torch.where(candidates, conf, torch.full_like(conf, float("-inf")))
    order = [int(i) for i in torch.sort(conf, descending=True, stable=True).indices
             if candidates[i]]
    if threshold is not None:
        return order[:1] + [i for i in order[1:] if conf[i] > threshold]
    return order[:count]


@torch.no_grad()
def generate_with_embeds(model, prompt_embeds: torch.Tensor, params: DiffusionParams,
                         stops: list[list[int]] | None = None) -> list[int]:
    """Decode one merged prompt [L, hidden] (a ReferenceLLaDAV's prompt_embeds); returns the
    answer before the first stop sequence (default: [[eot_token_id]])."""
    params.validate()
    if params.schedule != "blocks":
        raise ValueError(f"LLaDA-V decoding follows the official blocks schedule, not "
                         f"schedule={params.schedule!r}")
    config = model.config
    stops = [[config.eot_token_id]] if stops is None else stops
    gen = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
    tokens = torch.full((params.gen_length,), config.mask_token_id, dtype=torch.long)
    stop = None
    for b in range(params.num_blocks):
        lo, hi = b * params.block_length, (b + 1) * params.block_length
        if stop is not None and stop <= lo:
            break
        schedule = transfer_schedule(int((tokens[lo:hi] == config.mask_token_id).sum()),
                                     params.steps_per_block)
        for count in schedule:
            masked = tokens == config.mask_token_id
            if (stop is not None and not masked[:stop].any()) or not masked[lo:hi].any():
                break
            embeds = torch.cat([prompt_embeds, model.embed_tokens(tokens)])
            logits = model.logits(embeds)[prompt_embeds.shape[0]:].float()
            x0, conf = sample_and_score(_restrict_logits(logits[lo:hi], config), params,
                                        config.mask_token_id, gen)
            limit = hi if stop is None else min(stop, hi)
            candidates = masked[lo:hi] & (torch.arange(lo, hi) < limit)
            for i in _choose(conf, candidates, count, params.threshold):
                tokens[lo + i] = x0[i]
            stop = update_stop(tokens, stops, stop)
    return tokens[:stop].tolist() if stop is not None else tokens.tolist()
