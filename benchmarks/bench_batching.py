"""Throughput versus concurrency (continuous batching) and versus tensor parallelism.

    python benchmarks/bench_batching.py --model examples/models/llada-tiny-arith \
        --requests 64 --batch-sizes 1 4 16 64 --tp 1 2 --out benchmarks/results/batching

For each TP size one engine; for each policy (window + threshold schedule; `none`, `dual`,
`elastic` at gamma 0.9, `elastic-floor` = elastic with drift_min_weight 1e-6,
`elastic-every3` = elastic with refresh_interval 3, `guard` = elastic with the staleness guard
at its defaults; with --tuned PICK.json also `tuned` = the tune command's pick) and each
concurrency B, the same held-out prompts run in waves of B requests
submitted together (each wave's requests share every forward pass). Generated tokens count
only what the user receives (answer tokens before the first EOS). With --repeats N each row
is the best of N runs taken round robin over the concurrencies. Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# vLLM's CPU default reserves a share of the whole machine's memory for KV and refuses to start
# when other processes hold a little of it; 16 canvases of ~700 tokens need well under 1 GiB.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

WINDOW = {"schedule": "window", "window_length": 16, "threshold": 0.9}
# Policy rows: the cache_policy and its knobs (elastic-floor: the drift test over attended keys).
POLICIES = {"none": {"cache_policy": "none"}, "dual": {"cache_policy": "dual"},
            "elastic": {"cache_policy": "elastic", "gamma": 0.9},
            "elastic-floor": {"cache_policy": "elastic", "gamma": 0.9,
                              "drift_min_weight": 1e-6},
            "elastic-every3": {"cache_policy": "elastic", "gamma": 0.9, "refresh_interval": 3},
            # the staleness guard at its defaults (beyond the paper)
            "guard": {"cache_policy": "elastic", "gamma": 0.9, "guard": True}}


def measure(llm, prompts, extra: dict, batch: int, eos_id: int) -> dict:
    from vllm import SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=None, extra_args=extra)
    tokens, start = 0, time.perf_counter()
    for i in range(0, len(prompts), batch):
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts[i: i + batch]], sp,
                            use_tqdm=False)
        for o in outs:
            ids = list(o.outputs[0].token_ids)
            tokens += ids.index(eos_id) if eos_id in ids else len(ids)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "requests_per_s": len(prompts) / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--policies", nargs="+", default=["none", "elastic"], choices=list(POLICIES))
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--task", choices=("arith", "long"), default="arith",
                    help="held-out problems of the tiny (arith) or the long-answer model")
    ap.add_argument("--window-length", type=int, default=16,
                    help="window schedule's width (the authors use 32 for GSM8K)")
    ap.add_argument("--tp", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tp-batch-sizes", type=int, nargs="+", default=[1, 16],
                    help="concurrencies measured for TP > 1")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per row, round robin over the concurrencies; a row is the best")
    ap.add_argument("--out", default="benchmarks/results/batching")
    ap.add_argument("--tuned", default=None,
                    help="pick.json of `vllm-elastic tune`: adds the policy row `tuned`")
    args = ap.parse_args()

    from report import write_report
    from transformers import AutoTokenizer
    from vllm import LLM

    from vllm_elastic.tools.training.data import chat_prompt_ids
    from vllm_elastic.tools.training.batches import task_data

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = [chat_prompt_ids(tokenizer, p.question)
               for p in task_data(args.task).test_problem_list(args.requests)]
    max_len = max(len(p) for p in prompts) + args.gen_length
    from bench_policies import describe_threads, tuned_row

    policies = {name: POLICIES[name] for name in args.policies} | dict(tuned_row(args))

    threads = describe_threads()  # before any engine: the plugin sets its CPU default then
    rows = []
    for tp in args.tp:
        if tp > 1:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(i) for i in range(tp))
        llm = LLM(model=args.model, dtype="float32", max_model_len=max_len,
                  tensor_parallel_size=tp, max_num_seqs=max(args.batch_sizes),
                  max_num_batched_tokens=max_len * max(args.batch_sizes))
        for policy, knobs in policies.items():
            # a tune pick carries its own schedule, which wins over --window-length
            extra = {**WINDOW, "window_length": args.window_length, **knobs,
                     "gen_length": args.gen_length}
            measure(llm, prompts[:2], extra, 2, tokenizer.eos_token_id)  # warm-up
            sizes = args.batch_sizes if tp == 1 else args.tp_batch_sizes
            runs: dict[int, list[dict]] = {b: [] for b in sizes}
            # Round robin over the concurrencies, best run of each: this machine's speed
            # drifts by several percent between minutes, which would otherwise land on
            # whichever concurrency ran during a slow spell.
            for _ in range(args.repeats):
                for batch in sizes:
                    run = measure(llm, prompts, extra, batch, tokenizer.eos_token_id)
                    runs[batch].append(run)
                    print(dict(tp=tp, policy=policy, batch=batch, **run), file=sys.stderr,
                          flush=True)
            for batch in sizes:
                best = max(runs[batch], key=lambda run: run["tokens_per_s"])
                rows.append(dict(tp=tp, policy=policy, batch=batch, **best,
                                 runs_tokens_per_s=[round(run["tokens_per_s"], 2)
                                                    for run in runs[batch]]))
        del llm
    by = {(r["tp"], r["policy"], r["batch"]): r for r in rows}
    lines = ["| TP | policy | concurrency | generated tokens/s | requests/s | vs concurrency 1 "
             "| elastic vs none | TP vs TP=1 |", "|" + "---|" * 8]
    for r in rows:
        one = by.get((r["tp"], r["policy"], 1))
        none = by.get((r["tp"], "none", r["batch"]))
        tp1 = by.get((1, r["policy"], r["batch"]))
        ratio = lambda a, b: f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x" if b else "-"  # noqa
        lines.append(f"| {r['tp']} | {r['policy']} | {r['batch']} | {r['tokens_per_s']:.1f} | "
                     f"{r['requests_per_s']:.2f} | {ratio(r, one)} | {ratio(r, none)} | "
                     f"{ratio(r, tp1)} |")
    write_report(args.out + ".md", f"Throughput vs concurrency and TP on `{args.model}`",
                 f"{args.requests} held-out prompts ({args.task}), gen_length {args.gen_length}, "
                 f"window {args.window_length} + threshold 0.9, greedy, fp32. Each row is the "
                 f"best of {args.repeats} run(s), round robin over the concurrencies (every "
                 f"run's tokens/s in the JSON).", lines,
                 threads=f"TP=1: {threads}" + ("; TP>1: one core per rank"
                                               if max(args.tp) > 1 else ""))
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
