"""The trainer's command-line options, grouped: run, model, data, frontier rows, curriculum and
mixtures, bookkeeping. Every option's help says what it changes; the model card says which
runs used it and why."""

from __future__ import annotations

import argparse

from vllm_elastic.tools.training.batches import TASKS

DESCRIPTION = "Train a small LLaDA on arithmetic word problems (LLaDA's SFT objective), on CPU."
DEFAULT_STATE = "/root/.cache/vllm-elastic/train/llada-tiny-arith/train_state.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=DESCRIPTION)
    _run_options(ap)
    _model_options(ap)
    _data_options(ap)
    _frontier_options(ap)
    _curriculum_options(ap)
    _bookkeeping_options(ap)
    return ap.parse_args(argv)


def _run_options(ap: argparse.ArgumentParser) -> None:
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


def _model_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=2, help="head_dim = d_model / heads")
    ap.add_argument("--mlp", type=int, default=192)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32, help="rows of a --gen-length batch")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--decay-frac", type=float, default=0.25)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eps", type=float, default=1e-3)


def _data_options(ap: argparse.ArgumentParser) -> None:
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


def _frontier_options(ap: argparse.ArgumentParser) -> None:
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


def _curriculum_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--drill-frac", type=float, default=0.0,
                    help="long task: share of problems that are bare arithmetic drills "
                         "(long_drills.drill, 2-12 operations)")
    ap.add_argument("--facts-frac", type=float, default=0.0,
                    help="long task: share of problems that are independent arithmetic facts "
                         "(long_drills.facts, 4-16 lines: results cannot be copied from a later "
                         "line)")
    ap.add_argument("--facts-low", type=float, default=0.0,
                    help="long task: share of the facts' one-digit steps whose operand is below "
                         "20, where a step changes the result's digit count (long_drills.facts)")
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


def _bookkeeping_options(ap: argparse.ArgumentParser) -> None:
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
