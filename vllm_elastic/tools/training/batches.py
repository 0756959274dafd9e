"""Training batches, each a pure function of (seed, step), so a resumed run sees the data it
would have seen: problems by the curriculum, EOS-padded canvases, prompt masking."""

from __future__ import annotations

import argparse
import random
from typing import NamedTuple

import torch

from vllm_elastic.tools.checkpoint import EOS_ID
from vllm_elastic.tools.training import data, long_data, long_drills

TASKS = ("arith", "long")


def task_data(task: str):
    """The problem module of `task` (both expose sample_problem, test_problems, corpus)."""
    return long_data if task == "long" else data


def curriculum_progress(args: argparse.Namespace, step: int) -> float:
    """0 at --curriculum-start, rising linearly to 1 over --curriculum-steps."""
    return min(1.0, max(0, step - args.curriculum_start) / max(1, args.curriculum_steps))


def curriculum(args: argparse.Namespace, step: int) -> tuple[float, float]:
    """(one-step fraction, bare-expression fraction) at `step`: linear from start to end."""
    f = curriculum_progress(args, step)
    return (args.one_step_start + (args.one_step_end - args.one_step_start) * f,
            args.bare_start + (args.bare_end - args.bare_start) * f)


class Batch(NamedTuple):
    ids: torch.Tensor             # [B, L] prompt + answer + EOS padding
    prompt_lengths: torch.Tensor  # [B]
    gen_length: int               # G: the answer canvas (answer + EOS padding)
    kinds: tuple[str, ...]        # each row's problem kind (Problem.template: "facts", ...)


def make_batch(args: argparse.Namespace, tokenizer, step: int) -> Batch:
    """The batch of `step`: a pure function of (seed, step)."""
    if args.task == "long":
        return _long_batch(args, tokenizer, step)
    rng = random.Random(f"batch-{args.seed}-{step}")
    gen_len, rows = args.gen_length, args.batch_size
    if rng.random() < args.long_frac:
        lengths = [int(x) for x in args.long_gen_lengths.split(",")]
        weights = [float(x) for x in args.long_weights.split(",")]
        gen_len = rng.choices(lengths, weights)[0]
        rows = max(2, round(args.batch_size * (40 + args.gen_length) / (40 + gen_len)))
    frac, bare = curriculum(args, step)
    seqs, plens, kinds = [], [], []
    for _ in range(rows):
        p = data.sample_problem(rng, "train", frac, bare)
        prompt = data.chat_prompt_ids(tokenizer, p.question)
        answer = data.answer_ids(tokenizer, p.solution)[:gen_len]
        seqs.append(prompt + answer + [EOS_ID] * (gen_len - len(answer)))
        plens.append(len(prompt))
        kinds.append(p.template)
    return Batch(pad_rows(seqs), torch.tensor(plens), gen_len, tuple(kinds))


def _long_batch(args: argparse.Namespace, tokenizer, step: int) -> Batch:
    """Long task: about --batch-tokens tokens per batch, rows of similar length (a random run
    of 64 problems sorted by length, so little compute goes to padding). G is the batch's
    longest answer plus 0 to --eos-tail-max EOS or, with probability --long-frac, one of
    --long-gen-lengths (so the EOS-padded 256/512 canvases of evaluation are familiar).

    Why the tail matters: batches hold problems of similar length, so with a short tail the
    masks left after a frontier count the answer's remaining tokens, and a model can learn its
    stop decision from that count instead of from the prompt (the model card has the run that
    did)."""
    rng = random.Random(f"batch-{args.seed}-{step}")
    f = curriculum_progress(args, step)
    short = args.short_start + (args.short_end - args.short_start) * f
    probs = [long_data.sample_problem(rng, "train", 1, 3) if rng.random() < short
             else long_data.sample_problem(rng, "train", args.min_steps) for _ in range(64)]
    if args.drill_frac > 0 or args.facts_frac > 0:  # a separate stream: batches without
        drills = random.Random(f"drill-{args.seed}-{step}")  # drills stay as they were
        probs = [_drill_or(p, drills, args) for p in probs]
    rows = sorted(((data.chat_prompt_ids(tokenizer, p.question),
                    data.answer_ids(tokenizer, p.solution), p.template) for p in probs),
                  key=lambda row: len(row[0]) + len(row[1]))
    fixed = None
    if rng.random() < args.long_frac:
        lengths = [int(x) for x in args.long_gen_lengths.split(",")]
        weights = [float(x) for x in args.long_weights.split(",")]
        fixed = rng.choices(lengths, weights)[0]
    extra = rng.randint(0, args.eos_tail_max)
    start = rng.randrange(len(rows) - 1)
    end = start + 2
    while end < len(rows):  # grow the run while it fits the token budget
        chosen = rows[start: end + 1]
        g = fixed or max(len(a) for _, a, _ in chosen) + extra
        if (end + 1 - start) * (max(len(p) for p, _, _ in chosen) + g) > args.batch_tokens:
            break
        end += 1
    chosen = rows[start:end]
    gen_len = fixed or max(len(a) for _, a, _ in chosen) + extra
    seqs, plens = [], []
    for prompt, answer, _ in chosen:
        answer = answer[:gen_len]
        seqs.append(prompt + answer + [EOS_ID] * (gen_len - len(answer)))
        plens.append(len(prompt))
    kinds = tuple(kind for _, _, kind in chosen)
    return Batch(pad_rows(seqs), torch.tensor(plens), gen_len, kinds)


def prompt_masking(args: argparse.Namespace, prompt_lengths: torch.Tensor, step: int
                   ) -> torch.Tensor:
    """Prompt lengths with a --prompt-mask-frac share of rows set to 0, so those rows are
    trained with LLaDA's pre-training objective (every token may be masked). Copying is what a
    small model learns last: this asks for it both ways, answer from prompt and prompt from
    answer. A pure function of (seed, step), like the batch."""
    if args.prompt_mask_frac <= 0:
        return prompt_lengths
    rng = random.Random(f"prompt-mask-{args.seed}-{step}")
    keep = [rng.random() >= args.prompt_mask_frac for _ in range(len(prompt_lengths))]
    return prompt_lengths * torch.tensor(keep, dtype=prompt_lengths.dtype)


def pad_rows(seqs: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [EOS_ID] * (width - len(s)) for s in seqs])


def _drill_or(p, rng: random.Random, args: argparse.Namespace):
    """p, or in its place a drill (--drill-frac) or a list of facts (--facts-frac)."""
    r = rng.random()
    if r < args.drill_frac:
        return long_drills.drill(rng, rng.randint(2, 12))
    if r < args.drill_frac + args.facts_frac:
        return long_drills.facts(rng, rng.randint(4, 16), low=args.facts_low)
    return p
