"""The training loop: set up or resume, then steps until the wall-clock budget is spent, with
held-out evaluations, checkpoints and a log along the way (train.py is its command)."""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass

import torch

from vllm_elastic.oracles.llada import ReferenceLLaDA
from vllm_elastic.tools.checkpoint import build_tokenizer, tiny_config
from vllm_elastic.tools.training.batches import make_batch, prompt_masking, task_data
from vllm_elastic.tools.training.evaluation import evaluate
from vllm_elastic.tools.training.masks import (arith_tokens, frontier_cuts, frontier_rows,
                                               result_digits, result_rows)
from vllm_elastic.tools.training.model_setup import (init_weights, load_tokenizer, make_optimizer,
                                               scale_qk)
from vllm_elastic.tools.training.objective import lr_at, sft_loss
from vllm_elastic.tools.training.state import (log_position, truncate_log, export,
                                               save_state)


@dataclass
class Run:
    """A run's model and where it stands (step, wall-clock seconds and tokens so far)."""

    args: argparse.Namespace
    tokenizer: object
    model: ReferenceLLaDA
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # the masks' random stream
    log_path: str
    step: int = 0
    elapsed: float = 0.0
    tokens: int = 0
    next_eval: float = 0.0
    warmup_from: int = 0  # a fresh optimizer warms up again (weights-only continuation)


def _tokenizer(args: argparse.Namespace, tok_dir: str, resume: bool):
    if resume:
        return load_tokenizer(tok_dir)
    if args.init_from:
        tokenizer = load_tokenizer(args.init_from)
    else:
        tokenizer = build_tokenizer(task_data(args.task).tokenizer_corpus(seed=args.seed),
                                    args.vocab_size)
    os.makedirs(tok_dir, exist_ok=True)
    tokenizer.save_pretrained(tok_dir)
    return tokenizer


def prepare(args: argparse.Namespace) -> Run:
    """A fresh run, a resumed one (--state exists) or a weights-only continuation
    (--init-from)."""
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    resume = os.path.exists(args.state)
    tokenizer = _tokenizer(args, os.path.join(os.path.dirname(os.path.abspath(args.state)),
                                              "tokenizer"), resume)
    model = ReferenceLLaDA(tiny_config(len(tokenizer), args.layers, args.d_model, args.heads,
                                       mlp=args.mlp))
    init_weights(model, args.seed)
    run = Run(args, tokenizer, model, make_optimizer(model, args.lr, args.weight_decay),
              torch.Generator().manual_seed(args.seed),
              os.path.join(args.out, "train_log.jsonl"), next_eval=args.eval_minutes * 60)
    if resume:
        _resume(run)
    elif args.init_from:
        _continue_from(run)
    else:
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        if os.path.exists(run.log_path):
            os.remove(run.log_path)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}, {args.layers} layers, "
          f"d_model {args.d_model}, {args.heads} heads", flush=True)
    return run


def _resume(run: Run) -> None:
    st = torch.load(run.args.state, weights_only=False)
    run.model.load_state_dict(st["model"])
    run.optimizer.load_state_dict(st["optimizer"])
    run.step, run.elapsed, run.tokens = st["step"], st["elapsed"], st["tokens"]
    run.next_eval = st["next_eval"]
    torch.set_rng_state(st["torch_rng"])
    run.gen.set_state(st["mask_rng"])
    random.setstate(st["python_rng"])
    truncate_log(run.log_path, run.step)
    print(f"resumed from {run.args.state}: step {run.step}, {run.elapsed / 60:.1f} min elapsed",
          flush=True)


def _continue_from(run: Run) -> None:
    args = run.args
    run.model.load_state_dict(ReferenceLLaDA.from_pretrained(args.init_from).state_dict())
    scale_qk(run.model, args.init_qk_scale)
    run.step, run.elapsed, run.tokens = log_position(os.path.join(args.init_from,
                                                                   "train_log.jsonl"))
    run.warmup_from = run.step
    run.next_eval = run.elapsed + args.eval_minutes * 60
    torch.manual_seed(args.seed + run.step)
    random.seed(args.seed + run.step)
    print(f"continuing {args.init_from} (weights only) from step {run.step}, "
          f"{run.elapsed / 60:.1f} min", flush=True)


def train_step(run: Run, arith) -> dict:
    """One optimizer step on the batch of `run.step`; returns what the log records."""
    args, step = run.args, run.step
    lr = lr_at(args, step, run.elapsed / (args.minutes * 60), run.warmup_from)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    ids, plens, gen_len, kinds = make_batch(args, run.tokenizer, step)
    plens = prompt_masking(args, plens, step)
    rows = result_rows(args, kinds, step)
    results = None if rows is None else result_digits(ids, plens, arith) & rows[:, None]
    loss = sft_loss(run.model, ids, plens, args.eps, run.gen, frontier_rows(args, plens, step),
                    args.frontier_window, results, frontier_cuts(args, ids, plens, arith, step),
                    args.frontier_full_window)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), args.grad_clip)
    run.optimizer.step()
    run.step += 1
    run.tokens += ids.numel()
    return {"loss": loss.item(), "lr": lr, "grad_norm": float(gnorm), "gen_length": gen_len,
            "tokens": ids.numel()}


class TrainLog:
    """OUT/train_log.jsonl: a train record every --log-every steps, an eval record each time."""

    def __init__(self, run: Run) -> None:
        self.run, self.file = run, open(run.log_path, "a")
        self.window: list[tuple[dict, float]] = []  # (step record, seconds) since the last
        self.last_eval: dict | None = None

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def step(self, rec: dict, seconds: float) -> dict | None:
        self.window.append((rec, seconds))
        if self.run.step % self.run.args.log_every:
            return None
        recs = [r for r, _ in self.window]
        out = {"type": "train", "step": self.run.step, "elapsed_s": round(self.run.elapsed, 1),
               "tokens": self.run.tokens,
               "loss": round(sum(r["loss"] for r in recs) / len(recs), 4), "lr": rec["lr"],
               "grad_norm": round(rec["grad_norm"], 3), "gen_length": rec["gen_length"],
               "tok_per_s": round(sum(r["tokens"] for r in recs)
                                  / max(sum(s for _, s in self.window), 1e-9), 1)}
        self.write(out)
        self.window = []
        return out

    def evaluation(self) -> dict:
        from tqdm import tqdm

        run, args, t0 = self.run, self.run.args, time.time()
        res = evaluate(run.model, run.tokenizer, args.eval_n, args.eval_gen_length,
                       args.eval_block_length, task=args.task, schedule=args.eval_schedule)
        res["seconds"] = round(time.time() - t0, 1)
        self.write({"type": "eval", "step": run.step, "elapsed_s": round(run.elapsed, 1),
                    "tokens": run.tokens, **res})
        tqdm.write(f"[eval] step {run.step} {run.elapsed / 60:.1f} min: held-out accuracy "
              f"{res['accuracy']:.0%} ({res['correct']}/{res['n']}, gen_length "
              f"{res['gen_length']}), result digits at the frontier "
              f"{res['frontier_result_accuracy']:.0%}, e.g. {res['samples'][0]['out']!r}")
        self.last_eval = res
        return res


def checkpoint(run: Run) -> None:
    save_state(run.args.state, run.model, run.optimizer, run.step, run.elapsed, run.tokens,
               run.next_eval, run.gen, run.args)
    export(run.model, run.tokenizer, run.args.out)


def _timed(run: Run, work) -> None:
    """Run `work()`, counting its wall-clock time into the run's budget."""
    t0 = time.time()
    work()
    run.elapsed += time.time() - t0


def train(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    run, budget = prepare(args), args.minutes * 60
    run.model.train()
    arith = (arith_tokens(run.tokenizer) if max(args.results_frac, args.frontier_at_results,
                                                 args.frontier_at_lines,
                                                 args.frontier_at_copies) > 0 else None)
    log = TrainLog(run)
    bar = tqdm(total=round(budget), initial=min(round(run.elapsed), round(budget)), unit="s",
               mininterval=30, disable=args.no_progress, dynamic_ncols=False, ncols=110)
    last_ckpt = time.time()
    while run.elapsed < budget and (args.max_steps is None or run.step < args.max_steps):
        t0 = time.time()
        rec = train_step(run, arith)
        run.elapsed += time.time() - t0
        bar.update(min(round(run.elapsed), round(budget)) - bar.n)
        if (out := log.step(rec, time.time() - t0)) is not None:
            acc = log.last_eval["accuracy"] if log.last_eval else None
            bar.set_postfix(step=run.step, loss=f"{out['loss']:.3f}",
                            tok_s=int(out["tok_per_s"]), acc="-" if acc is None else f"{acc:.0%}")
        if run.next_eval <= run.elapsed < budget:
            run.next_eval = run.elapsed + args.eval_minutes * 60
            _timed(run, log.evaluation)
        if time.time() - last_ckpt >= args.ckpt_minutes * 60:
            _timed(run, lambda: checkpoint(run))
            last_ckpt = time.time()
    bar.close()
    final = log.evaluation() if args.eval_n > 0 else None
    checkpoint(run)
    log.file.close()
    print(f"done: step {run.step}, {run.tokens} tokens, {run.elapsed / 60:.1f} min; exported "
          f"to {args.out}", flush=True)
    return {"step": run.step, "tokens": run.tokens, "elapsed": run.elapsed, "final_eval": final}
