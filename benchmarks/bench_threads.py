"""How many cores the model gets on CPU: vLLM's default versus both cores.

    python benchmarks/bench_threads.py --model examples/models/llada-tiny-arith \
        --out benchmarks/results/threads

vLLM's CPU worker binds the model's OpenMP threads by `VLLM_CPU_OMP_THREADS_BIND`: `auto`
(the default) leaves one core to the API/engine-core processes, which on a 2-core machine
means one thread for the model; `0-1` gives the model both cores (the frontend then shares
them). Each setting runs in its own process (the variable is read at engine start) and
measures generated tokens/s at concurrency 1 and 16 for a few policies (bench_batching's
`measure`). Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = {"auto (default: 1 core here)": "auto", "both cores (0-1)": "0-1"}


def child(args: argparse.Namespace) -> None:
    """One engine under the current VLLM_CPU_OMP_THREADS_BIND; prints one JSON line."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_batching import POLICIES, WINDOW, measure
    from transformers import AutoTokenizer
    from vllm import LLM

    from vllm_elastic.tools.training.data import chat_prompt_ids
    from vllm_elastic.tools.training.batches import task_data

    problems = task_data(args.task).test_problem_list(args.requests)
    tok = AutoTokenizer.from_pretrained(args.model)
    prompts = [chat_prompt_ids(tok, p.question) for p in problems]
    llm = LLM(model=args.model, dtype="float32",
              max_model_len=max(len(p) for p in prompts) + args.gen_length)
    llm.generate([{"prompt_token_ids": prompts[0]}], use_tqdm=False)  # warm-up
    rows = []
    for policy in args.policies:
        extra = dict(WINDOW, gen_length=args.gen_length, **POLICIES[policy],
                     window_length=args.window_length)
        for batch in args.batch_sizes:
            r = measure(llm, prompts, extra, batch, tok.eos_token_id)
            rows.append({"policy": policy, "concurrency": batch, **r})
    print("RESULT " + json.dumps(rows), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--task", choices=("arith", "long"), default="arith")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--window-length", type=int, default=16)
    ap.add_argument("--policies", nargs="+", default=["none", "dual"])
    ap.add_argument("--out", default="benchmarks/results/threads")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    from report import write_report

    results = []
    for label, bind in SETTINGS.items():
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--task", args.task,
               "--requests", str(args.requests), "--gen-length", str(args.gen_length),
               "--window-length", str(args.window_length),
               "--batch-sizes", *map(str, args.batch_sizes), "--policies", *args.policies]
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": bind}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        results += [{"setting": label, "bind": bind, **r} for r in rows]
    base = {(r["policy"], r["concurrency"]): r["tokens_per_s"] for r in results
            if r["bind"] == "auto"}
    body = ["| model threads | policy | concurrency | tokens/s | vs default |",
            "|---|---|---:|---:|---:|"]
    for r in results:
        ratio = r["tokens_per_s"] / base[(r["policy"], r["concurrency"])]
        body.append(f"| {r['setting']} | {r['policy']} | {r['concurrency']} | "
                    f"{r['tokens_per_s']:.1f} | {ratio:.2f}x |")
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    write_report(args.out + ".md", f"Model threads on CPU: default vs both cores (`{args.model}`)",
                 f"{args.requests} held-out prompts ({args.task}), gen {args.gen_length}, window "
                 f"{args.window_length} + threshold 0.9, greedy, fp32; one engine per setting.", body,
                 threads="VLLM_CPU_OMP_THREADS_BIND as in each row")


if __name__ == "__main__":
    main()
