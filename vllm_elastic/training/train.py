"""Train a small LLaDA on two-step arithmetic word problems (LLaDA's SFT objective), on CPU.

    python -m vllm_elastic.training.train --out examples/models/llada-tiny-arith --minutes 52

Objective (LLaDA's SFT): the prompt is never masked; every answer token, including the EOS
padding after the answer, is replaced by MASK with probability p = (1-eps)*t + eps,
t ~ U(0, 1) per example; cross-entropy on masked positions weighted by 1/p and normalised by the
example's answer length (answer + EOS padding), averaged over the batch.

Canvases: the answer is EOS-padded to a fixed generation length G (prompt + G tokens, then
EOS-padded to the batch's longest row). Most batches use G = --gen-length (32: answers are at
most 20 tokens, so the canvas holds little padding and most compute goes to the answer); a
fraction --long-frac uses G in --long-gen-lengths (64/128/256/512, with fewer rows for the same
token budget) so the longer EOS-padded canvases that evaluation and the benchmarks decode (64,
256, 512) do not confuse the model.

Curriculum (the part that decides whether a small model learns this at all): over the first
--curriculum-steps steps, the fraction of one-step problems falls linearly from --one-step-start
to --one-step-end and the fraction of bare expressions ("What is 3*4-5?", the same arithmetic
and worked solution as a word problem) from --bare-start to --bare-end. The hard part for a
small bidirectional model is learning to copy the operands from the prompt: a first run
(d_model 128, word problems only, then 40% bare two-step problems from step 3391) sat at 2-8%
held-out accuracy for 70 minutes, still predicting its prior digits instead of the prompt's;
with this curriculum the shipped 8-layer d_model-64 model copies operands reliably by step ~5,500
and reaches 68% held-out accuracy at step 11,689 (52 minutes on one thread).

Long task (--task long): the same trap, at larger scale. The first 150-minute run (no
curriculum) learned the answer's format and stopped there: after 3,058 steps it wrote
well-formed sentences with numbers and names from its prior, not from the prompt (0/10
held-out; even with every other answer token visible it did not copy a number repeated one line
later). The continuation adds two aids: --short-start/--short-end, a share of 1-3 step problems
(short prompts, few candidates to copy from) falling linearly from --curriculum-start over
--curriculum-steps, and --prompt-mask-frac, a share of rows trained with LLaDA's pre-training
objective (prompt masked too), which asks for the copy in both directions.

Its first hour did not move held-out accuracy either, and a look inside said why: attention
had collapsed. Mean attention entropy was 0.05-0.4 nats in layers 0-6 (uniform over the
~300-token canvas would be 5.7; the tiny model that learned its task sits at 0.4-2.9), so
every head attended one fixed neighbour and the gradient through its softmax had all but
vanished: masking one occurrence of a name written ten times elsewhere in the canvas, the model
still guessed a name from its prior. Halving the query and key projections (--init-qk-scale
0.5: logits x0.25) left the training loss where it was (0.54 -> 0.55) and raised the
entropies about fourfold; the run continues from there with a lower learning rate (7e-4) and
weight decay 0.1. evaluate() logs the per-layer entropy with every held-out evaluation.

After 27M tokens the loss was ~0.2 and exact match still 0/10, and a probe said why: with the
answer visible up to a digit and everything from it masked (what left-to-right decoding sees),
the model predicted 98% of operand digits (copied from the prompt) but only 34% of result
digits, while with random masking it predicted nearly all of them. Under uniform masking a
result (`13-6=7`) is usually still visible as the next line's operand (`7+4=11`), so copying
it from there is the cheapest way to lower the loss; a decoder working left to right never
has the next line. --frontier-frac trains a share of rows at such a frontier
(frontier_masks), and evaluate() logs that probe as `frontier_result_accuracy`.
--drill-frac mixes in bare arithmetic drills (long_data.drill), the long task's counterpart of
the tiny task's bare expressions; --facts-frac mixes in the same operations as independent
lines (long_data.facts), whose results no later line repeats, so even uniformly masked rows
must compute them (run 7: the model at 39M tokens still wrote 36-4=34 in free generation).

Run 7 (90 minutes with 30% facts rows, uniformly masked) did not teach the arithmetic either:
with a result and everything after it masked, the model's distribution over a result's units
digit stayed flat (~0.12 per digit, i.e. chance) while its tens digit was a copy of the first
operand's. Uniform masking rarely leaves a result masked with both its operands visible, and
the frontier rows hold few results among their window's words. --results-frac masks a share of
the facts rows on their result digits only (result_digits: every digit after "=" or "####"),
everything else visible, and scores those alone: on the run-7 checkpoint, 600 such steps of 16
rows (lr 1e-3, 8 minutes on two threads) took the result-digit accuracy from 0.38 to 0.98.

Learning rate: linear warmup over --warmup steps, constant, then a linear decay to 10% over
the last --decay-frac of the wall-clock budget (a time-based warmup-stable-decay schedule, so a
run of any --minutes ends annealed).

--minutes is the run's total wall-clock budget (training, evaluation and checkpoints), counted
across resumes. Every --ckpt-minutes the full training state (model, optimizer, step, elapsed
time, RNG states) goes to --state atomically and the shipped checkpoint (bf16, official LLaDA
layout) is exported to --out; every --eval-minutes the held-out exact-match accuracy of greedy
`reference.generate` decoding is logged. Rerunning the same command resumes from --state.
Batches are a pure function of (seed, step), so a resumed run sees the data it would have seen.
Logs: OUT/train_log.jsonl (one record per --log-every steps, plus eval records).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from typing import NamedTuple  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vllm_elastic.checkpoint import EOS_ID, MASK_ID, build_tokenizer, save_checkpoint, tiny_config  # noqa: E402,E501
from vllm_elastic.params import DiffusionParams  # noqa: E402
from vllm_elastic.reference import ReferenceLLaDA, cut_at_eos, generate, rope_cos_sin  # noqa: E402,E501
from vllm_elastic.training import data, long_data  # noqa: E402

DEFAULT_STATE = "/root/.cache/vllm-elastic/train/llada-tiny-arith/train_state.pt"
TASKS = ("arith", "long")


def task_data(task: str):
    """The problem module of `task` (both expose sample_problem, test_problems, corpus)."""
    return long_data if task == "long" else data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory of the exported checkpoint")
    ap.add_argument("--minutes", type=float, required=True,
                    help="total wall-clock budget, across resumes")
    ap.add_argument("--state", default=DEFAULT_STATE, help="resume file (keep it out of git)")
    ap.add_argument("--init-from", default=None,
                    help="without a resume file: start from this exported checkpoint's weights "
                         "and tokenizer (fresh optimizer), continuing its train_log.jsonl "
                         "(steps, tokens and elapsed time go on; --minutes is the new total)")
    ap.add_argument("--init-qk-scale", type=float, default=1.0,
                    help="with --init-from: multiply every layer's q_proj and k_proj weights by "
                         "this (attention logits by its square), to undo an attention-entropy "
                         "collapse before continuing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--task", choices=TASKS, default="arith",
                    help="arith: data.py's two-step problems; long: long_data.py's 4-12 steps")
    # model
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=2, help="head_dim = d_model / heads")
    ap.add_argument("--mlp", type=int, default=192)
    ap.add_argument("--vocab-size", type=int, default=512)
    # optimisation
    ap.add_argument("--batch-size", type=int, default=32, help="rows of a --gen-length batch")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--decay-frac", type=float, default=0.25)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eps", type=float, default=1e-3)
    # data
    ap.add_argument("--gen-length", type=int, default=32,
                    help="EOS-padded answer length of most batches (answers are <= 20 tokens); "
                         "0: the batch's longest answer plus 0 to --eos-tail-max tokens "
                         "(long task)")
    ap.add_argument("--eos-tail-max", type=int, default=32,
                    help="long task: most EOS padding after a batch's longest answer (drawn "
                         "uniformly from 0 to this). Small values let the count of masks left "
                         "after a frontier tell the model where the answer ends, which decoding "
                         "into a 320/512 canvas never does (see _long_batch)")
    ap.add_argument("--batch-tokens", type=int, default=0,
                    help="with --gen-length 0: rows per batch = batch_tokens / longest row")
    ap.add_argument("--min-steps", type=int, default=2,
                    help="long task: fewest events of a training problem (held-out: 4)")
    ap.add_argument("--short-start", type=float, default=0.0,
                    help="long task: fraction of short problems (1-3 events, 1 shop item) at "
                         "--curriculum-start ...")
    ap.add_argument("--short-end", type=float, default=0.0,
                    help="... falling linearly to this after --curriculum-steps more steps")
    ap.add_argument("--curriculum-start", type=int, default=0,
                    help="step at which the curricula start (a continued run starts later)")
    ap.add_argument("--prompt-mask-frac", type=float, default=0.0,
                    help="fraction of rows whose prompt is masked too (LLaDA's pre-training "
                         "objective on that row: a second signal for copying, prompt <-> answer)")
    ap.add_argument("--frontier-frac", type=float, default=0.0,
                    help="fraction of rows trained at a decoding frontier: the answer visible up "
                         "to a random cut, a --frontier-window of positions after it masked at "
                         "rate t (the cut itself always), everything beyond masked; loss on the "
                         "window (see frontier_masks)")
    ap.add_argument("--frontier-window", type=int, default=32)
    ap.add_argument("--frontier-at-results", type=float, default=0.0,
                    help="share of frontier rows whose cut is a result's first digit instead of "
                         "a uniform answer position (see frontier_cuts)")
    ap.add_argument("--frontier-at-lines", type=float, default=0.0,
                    help="share of frontier rows whose cut is the first token of an answer "
                         "line (the event a step restates, or the `####` that ends it) instead of "
                         "a uniform answer position; drawn after --frontier-at-results' rows")
    ap.add_argument("--frontier-at-copies", type=float, default=0.0,
                    help="share of frontier rows whose cut is a word the answer copies from the "
                         "prompt (a name, a day's verb, a shop item; see prompt_copies); drawn "
                         "after --frontier-at-lines' rows")
    ap.add_argument("--frontier-full-window", type=float, default=0.0,
                    help="share of frontier rows whose whole window is masked (rate 1, the "
                         "window schedule's state right after a left-to-right commit) instead "
                         "of rate t (see frontier_masks)")
    ap.add_argument("--drill-frac", type=float, default=0.0,
                    help="long task: share of problems that are bare arithmetic drills "
                         "(long_data.drill, 2-12 operations)")
    ap.add_argument("--facts-frac", type=float, default=0.0,
                    help="long task: share of problems that are independent arithmetic facts "
                         "(long_data.facts, 4-16 lines: results cannot be copied from a later "
                         "line)")
    ap.add_argument("--facts-low", type=float, default=0.0,
                    help="long task: share of the facts' one-digit steps whose operand is below "
                         "20, where a step changes the result's digit count (long_data.facts)")
    ap.add_argument("--results-frac", type=float, default=0.0,
                    help="long task: share of the facts rows masked and scored on their result "
                         "digits only (everything else visible: the cleanest arithmetic signal)")
    ap.add_argument("--long-frac", type=float, default=0.2,
                    help="fraction of batches with a longer canvas")
    ap.add_argument("--long-gen-lengths", default="64,128,256,512")
    ap.add_argument("--long-weights", default="0.5,0.2,0.2,0.1")
    ap.add_argument("--one-step-start", type=float, default=0.6)
    ap.add_argument("--one-step-end", type=float, default=0.1)
    ap.add_argument("--curriculum-steps", type=int, default=3000)
    ap.add_argument("--bare-start", type=float, default=1.0,
                    help="fraction of bare expressions ('What is 3*4-5?') at step 0 ...")
    ap.add_argument("--bare-end", type=float, default=0.3, help="... and after the curriculum")
    # bookkeeping
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--eval-minutes", type=float, default=10.0)
    ap.add_argument("--eval-n", type=int, default=50)
    ap.add_argument("--eval-gen-length", type=int, default=64)
    ap.add_argument("--eval-block-length", type=int, default=32)
    ap.add_argument("--eval-schedule", choices=("blocks", "window"), default="blocks",
                    help="window: Elastic-Cache's window of 32 with threshold 0.9 (fast)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this step (tests)")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# model, tokenizer

def init_weights(model: ReferenceLLaDA, seed: int) -> None:
    """OLMo-style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers)."""
    g = torch.Generator().manual_seed(seed)
    n_layers = model.config.n_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0) if "norm" in name or "ln_f" in name else p.zero_()
                continue
            std = 0.02
            if name.endswith("attn_out.weight") or ".ff_out.weight" in name and "blocks" in name:
                std = 0.02 / math.sqrt(2 * n_layers)
            p.copy_(torch.randn(p.shape, generator=g) * std)


def scale_qk(model: ReferenceLLaDA, scale: float) -> None:
    """Multiply every layer's query and key projections by `scale` (logits by scale**2)."""
    if scale == 1.0:
        return
    with torch.no_grad():
        for block in model.model.transformer["blocks"]:
            for proj in (block.q_proj, block.k_proj):
                proj.weight.mul_(scale)
                if proj.bias is not None:
                    proj.bias.mul_(scale)


@torch.no_grad()
def attention_entropy(model: ReferenceLLaDA, ids: torch.Tensor) -> list[float]:
    """Mean attention entropy (nats) per layer over every query of `ids` [B, L]: the collapse
    diagnostic (near 0 = one-hot attention, whose gradients vanish; log L = uniform)."""
    t = model.model.transformer
    cos, sin = rope_cos_sin(torch.arange(ids.shape[1]), model.config.head_dim,
                            model.config.rope_theta)
    x, out = t["wte"](ids), []
    for block in t["blocks"]:
        q, k, _ = block.qkv(x, cos, sin)
        probs = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
        out.append(round(float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()), 3))
        x = block(x, cos, sin)
    return out


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "wte" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def load_tokenizer(path: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(path)


# ---------------------------------------------------------------------------------------------
# data

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
    return Batch(_pad(seqs), torch.tensor(plens), gen_len, tuple(kinds))


def _long_batch(args: argparse.Namespace, tokenizer, step: int) -> Batch:
    """Long task: about --batch-tokens tokens per batch, rows of similar length (a random run
    of 64 problems sorted by length, so little compute goes to padding). G is the batch's
    longest answer plus 0 to --eos-tail-max EOS or, with probability --long-frac, one of
    --long-gen-lengths (so the EOS-padded 256/512 canvases of evaluation are familiar).

    Why the tail matters: batches hold problems of similar length, so with a short tail the
    masks left after a frontier count the answer's remaining tokens. The step-27,852 model
    learned its stop decision from that count instead of the prompt's: decoding left to right
    into a 320-token canvas it wrote lines past the asked minute count, into an answer-sized
    canvas it stopped early (the model card has the figures)."""
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
    return Batch(_pad(seqs), torch.tensor(plens), gen_len, kinds)


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


def _pad(seqs: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [EOS_ID] * (width - len(s)) for s in seqs])


def _drill_or(p, rng: random.Random, args: argparse.Namespace):
    """p, or in its place a drill (--drill-frac) or a list of facts (--facts-frac)."""
    r = rng.random()
    if r < args.drill_frac:
        return long_data.drill(rng, rng.randint(2, 12))
    if r < args.drill_frac + args.facts_frac:
        return long_data.facts(rng, rng.randint(4, 16), low=args.facts_low)
    return p


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
    later token of the window to place the masked ones by, and at threshold 0.9 it committed
    wrong tokens ahead of the frontier (probe --lookahead: 1,107 of 10,282 at step 38,066).

    Why: under uniform random masking an intermediate result (`13-6=7`) is usually visible
    again as the next line's operand, so a small model learns to copy it from there instead of
    computing it. Decoding left to right it never can: the next line is still masked. The long
    model after 27M tokens predicted 98% of operands but 34% of result digits at the frontier."""
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
    `####`: per token the long model got those wrong most often after run 8); the next
    --frontier-at-copies share at a word the answer copies from the prompt (prompt_copies: after
    run 10 the first slip of a free left-to-right answer was most often such a word, `Dan sells
    9` for `loses 9`, a line cut scores it only when the window's draw masks it, and then often
    with the line's arithmetic visible after it). The rest keep the uniform cut. A pure
    function of (seed, step)."""
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


# ---------------------------------------------------------------------------------------------
# evaluation

@torch.no_grad()
def evaluate(model: ReferenceLLaDA, tokenizer, n: int, gen_length: int = 64,
             block_length: int = 32, steps: int | None = None, task: str = "arith",
             schedule: str = "blocks") -> dict:
    """Held-out exact-match accuracy of greedy full-recompute decoding (`reference.generate`):
    LLaDA's blocks, one token per step, or (schedule="window") Elastic-Cache's window of 32
    with threshold 0.9, several tokens per step."""
    was_training = model.training
    model.eval()
    if schedule == "window":
        params = DiffusionParams(gen_length=gen_length, schedule="window", window_length=32,
                                 threshold=0.9)
    else:
        params = DiffusionParams(gen_length=gen_length, block_length=block_length, steps=steps)
    correct, samples = [], []
    for i, (question, answer) in enumerate(task_data(task).test_problems(n)):
        out = generate(model, data.chat_prompt_ids(tokenizer, question), params)
        text = tokenizer.decode(cut_at_eos(out, tokenizer.eos_token_id), skip_special_tokens=True)
        if data.extract_answer(text) == answer:
            correct.append(i)
        if len(samples) < 3:
            samples.append({"q": question, "out": text, "answer": answer})
    problems = task_data(task).test_problem_list(2)
    rows = [data.chat_prompt_ids(tokenizer, p.question) + data.answer_ids(tokenizer, p.solution)
            for p in problems]
    entropy = attention_entropy(model, _pad(rows))
    frontier = frontier_result_accuracy(model, tokenizer, task)
    model.train(was_training)
    return {"accuracy": len(correct) / n, "attention_entropy": entropy,
            "frontier_result_accuracy": frontier, "correct": len(correct),
            "correct_indices": correct, "n": n,
            "gen_length": gen_length, "block_length": block_length, "schedule": schedule,
            "task": task, "samples": samples}


@torch.no_grad()
def frontier_result_accuracy(model: ReferenceLLaDA, tokenizer, task: str, n: int = 10) -> float:
    """Share of result digits (the digits after each '=') of n held-out worked answers that the
    model predicts with the true answer visible before the digit and everything from it on
    masked: the arithmetic as left-to-right decoding needs it, without the next line to copy
    from. Cheap (one batched forward per problem) and more sensitive than exact match."""
    right = total = 0
    for p in task_data(task).test_problem_list(n):
        prompt = data.chat_prompt_ids(tokenizer, p.question)
        answer = data.answer_ids(tokenizer, p.solution)
        pieces = [tokenizer.decode([i]) for i in answer]
        targets = []
        for j, piece in enumerate(pieces):
            k = j - 1
            while k >= 0 and pieces[k].isdigit():
                k -= 1
            if piece.isdigit() and k >= 0 and pieces[k].strip() == "=":
                targets.append(len(prompt) + j)
        if not targets:
            continue
        ids = torch.tensor(prompt + answer).repeat(len(targets), 1)
        for row, j in enumerate(targets):
            ids[row, j:] = MASK_ID
        pred = model(ids).argmax(-1)
        want = torch.tensor(prompt + answer)
        right += sum(int(pred[row, j] == want[j]) for row, j in enumerate(targets))
        total += len(targets)
    return round(right / max(1, total), 4)


# ---------------------------------------------------------------------------------------------
# checkpointing

def export(model: ReferenceLLaDA, tokenizer, out_dir: str) -> None:
    """The shipped checkpoint (bf16), written to a temporary folder then moved into place."""
    tmp = out_dir.rstrip("/") + ".export-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, model.config, model.state_dict(), tokenizer, dtype=torch.bfloat16)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    shutil.rmtree(tmp, ignore_errors=True)


def save_state(path: str, model, optimizer, step: int, elapsed: float, tokens: int,
               next_eval: float, gen: torch.Generator, args: argparse.Namespace) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "elapsed": elapsed, "tokens": tokens, "next_eval": next_eval,
             "torch_rng": torch.get_rng_state(), "mask_rng": gen.get_state(),
             "python_rng": random.getstate(), "args": vars(args)}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def _log_position(path: str) -> tuple[int, float, int]:
    """(step, elapsed seconds, tokens) of the last training record of a log, or zeros."""
    last = {"step": 0, "elapsed_s": 0.0, "tokens": 0}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip() and (rec := json.loads(line))["type"] == "train":
                    last = rec
    return last["step"], float(last["elapsed_s"]), last["tokens"]


def _truncate_log(path: str, step: int) -> None:
    """Drop log records past the resumed step (they will be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(keep)


# ---------------------------------------------------------------------------------------------

def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    state_dir = os.path.dirname(os.path.abspath(args.state))
    tok_dir = os.path.join(state_dir, "tokenizer")
    log_path = os.path.join(args.out, "train_log.jsonl")
    resume = os.path.exists(args.state)

    if resume:
        tokenizer = load_tokenizer(tok_dir)
    else:
        if args.init_from:
            tokenizer = load_tokenizer(args.init_from)
        else:
            corpus = task_data(args.task).tokenizer_corpus(seed=args.seed)
            tokenizer = build_tokenizer(corpus, args.vocab_size)
        os.makedirs(tok_dir, exist_ok=True)
        tokenizer.save_pretrained(tok_dir)
    cfg = tiny_config(len(tokenizer), args.layers, args.d_model, args.heads, mlp=args.mlp)
    model = ReferenceLLaDA(cfg)
    init_weights(model, args.seed)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    step, elapsed, tokens, next_eval = 0, 0.0, 0, args.eval_minutes * 60
    warmup_from = 0  # a fresh optimizer warms up again (weights-only continuation)
    if resume:
        st = torch.load(args.state, weights_only=False)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        step, elapsed, tokens, next_eval = st["step"], st["elapsed"], st["tokens"], st["next_eval"]
        torch.set_rng_state(st["torch_rng"])
        gen.set_state(st["mask_rng"])
        random.setstate(st["python_rng"])
        _truncate_log(log_path, step)
        print(f"resumed from {args.state}: step {step}, {elapsed / 60:.1f} min elapsed", flush=True)
    elif args.init_from:
        model.load_state_dict(ReferenceLLaDA.from_pretrained(args.init_from).state_dict())
        scale_qk(model, args.init_qk_scale)
        step, elapsed, tokens = _log_position(os.path.join(args.init_from, "train_log.jsonl"))
        warmup_from = step
        next_eval = elapsed + args.eval_minutes * 60
        torch.manual_seed(args.seed + step)
        random.seed(args.seed + step)
        print(f"continuing {args.init_from} (weights only) from step {step}, "
              f"{elapsed / 60:.1f} min", flush=True)
    else:
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        if os.path.exists(log_path):
            os.remove(log_path)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}, "
          f"{args.layers} layers, d_model {args.d_model}, {args.heads} heads", flush=True)
    model.train()

    arith = (arith_tokens(tokenizer) if max(args.results_frac, args.frontier_at_results,
                                             args.frontier_at_lines, args.frontier_at_copies) > 0
             else None)
    budget = args.minutes * 60
    log = open(log_path, "a")
    from tqdm import tqdm
    bar = tqdm(total=round(budget), initial=min(round(elapsed), round(budget)), unit="s",
               mininterval=30, disable=args.no_progress, dynamic_ncols=False, ncols=110)
    last_ckpt = time.time()
    t_prev = time.time()
    win_loss, win_tok, win_time, win_steps = 0.0, 0, 0.0, 0
    last_eval: dict | None = None

    def log_record(rec: dict) -> None:
        log.write(json.dumps(rec) + "\n")
        log.flush()

    def do_eval() -> dict:
        nonlocal last_eval
        t0 = time.time()
        res = evaluate(model, tokenizer, args.eval_n, args.eval_gen_length, args.eval_block_length,
                       task=args.task, schedule=args.eval_schedule)
        res["seconds"] = round(time.time() - t0, 1)
        log_record({"type": "eval", "step": step, "elapsed_s": round(elapsed, 1),
                    "tokens": tokens, **res})
        tqdm.write(f"[eval] step {step} {elapsed / 60:.1f} min: held-out accuracy "
                   f"{res['accuracy']:.0%} ({res['correct']}/{res['n']}, gen_length "
                   f"{res['gen_length']}), result digits at the frontier "
                   f"{res['frontier_result_accuracy']:.0%}, e.g. {res['samples'][0]['out']!r}")
        last_eval = res
        return res

    def checkpoint() -> None:
        save_state(args.state, model, optimizer, step, elapsed, tokens, next_eval, gen, args)
        export(model, tokenizer, args.out)

    while elapsed < budget and (args.max_steps is None or step < args.max_steps):
        progress = elapsed / budget
        lr = lr_at(args, step, progress, warmup_from)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, plens, gen_len, kinds = make_batch(args, tokenizer, step)
        plens = prompt_masking(args, plens, step)
        rows = result_rows(args, kinds, step)
        results = None if rows is None else result_digits(ids, plens, arith) & rows[:, None]
        loss = sft_loss(model, ids, plens, args.eps, gen, frontier_rows(args, plens, step),
                        args.frontier_window, results,
                        frontier_cuts(args, ids, plens, arith, step),
                        args.frontier_full_window)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        step += 1
        tokens += ids.numel()
        now = time.time()
        dt = now - t_prev
        t_prev = now
        elapsed += dt
        bar.update(min(round(elapsed), round(budget)) - bar.n)
        win_loss += loss.item()
        win_tok += ids.numel()
        win_time += dt
        win_steps += 1
        if step % args.log_every == 0:
            rec = {"type": "train", "step": step, "elapsed_s": round(elapsed, 1),
                   "tokens": tokens, "loss": round(win_loss / win_steps, 4), "lr": lr,
                   "grad_norm": round(float(gnorm), 3), "gen_length": gen_len,
                   "tok_per_s": round(win_tok / max(win_time, 1e-9), 1)}
            log_record(rec)
            bar.set_postfix(step=step, loss=f"{rec['loss']:.3f}", tok_s=int(rec["tok_per_s"]),
                            acc="-" if last_eval is None else f"{last_eval['accuracy']:.0%}")
            win_loss, win_tok, win_time, win_steps = 0.0, 0, 0.0, 0
        if elapsed >= next_eval and elapsed < budget:
            t0 = time.time()
            do_eval()
            next_eval = elapsed + args.eval_minutes * 60
            elapsed += time.time() - t0
            t_prev = time.time()
        if time.time() - last_ckpt >= args.ckpt_minutes * 60:
            t0 = time.time()
            checkpoint()
            last_ckpt = time.time()
            elapsed += time.time() - t0
            t_prev = time.time()
    bar.close()
    final = do_eval() if args.eval_n > 0 else None
    checkpoint()
    log.close()
    print(f"done: step {step}, {tokens} tokens, {elapsed / 60:.1f} min; exported to {args.out}",
          flush=True)
    return {"step": step, "tokens": tokens, "elapsed": elapsed, "final_eval": final}


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
