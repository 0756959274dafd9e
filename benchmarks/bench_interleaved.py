"""Speed of a few settings measured request by request in turn, so that this machine's drift
(its speed wanders by ~10% between minutes) falls on every setting alike.

    python benchmarks/bench_interleaved.py --model examples/models/llada-long-arith \
        --task long --n 200 --gen-length 512 \
        --tuned benchmarks/results/tune_long_fp32/pick.json \
        --out benchmarks/results/interleaved_long_fp32_512

For each held-out problem, each setting runs it once, one request at a time (full recompute,
`dual`, Elastic-Cache at gamma 0.9 as published, the tune command's pick, and any
`--setting NAME='{json}'`, e.g. an earlier pick, on top of the window schedule). A setting's
tokens/s is its answer tokens (before the first EOS) over the sum of its requests' times;
accuracy is exact match; the table's columns are bench_policies.py's (work fraction, agreement
with full recompute, refresh rates, ...) plus the speed against `dual`. Writes OUT.md,
OUT.json (bench_policies' row format: `plot_frontier.py OUT.json --gen-length G --out OUT.png`
draws it) and the per-request log OUT.requests.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# Named as bench_policies names its rows, so its summary, comparisons and table apply.
SETTINGS = {"window/none": {"cache_policy": "none"}, "window/dual": {"cache_policy": "dual"},
            "elastic/0.9": {"cache_policy": "elastic", "gamma": 0.9}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-long-arith")
    ap.add_argument("--task", choices=("arith", "long"), default="long")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--gen-length", type=int, default=512)
    ap.add_argument("--tuned", required=True, help="pick.json of `vllm-elastic tune`")
    ap.add_argument("--setting", action="append", default=[], metavar="NAME=JSON",
                    help="another setting (extra args over window 16 + threshold 0.9)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    more = {}
    for item in args.setting:
        name, sep, extra = item.partition("=")
        if not sep:
            ap.error(f"--setting {item!r}: expected NAME=JSON")
        more[name] = json.loads(extra)

    from bench_policies import (WINDOW, add_comparisons, describe_threads, summarize, table,
                                tuned_row)
    from report import write_report
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from vllm_elastic.tools.training.batches import task_data
    from vllm_elastic.tools.training.data import chat_prompt_ids, extract_answer

    [(_, picked)] = tuned_row(args)  # the pick without its gen_length: --gen-length applies
    settings = {name: dict(WINDOW, **extra) for name, extra in SETTINGS.items()}
    settings["tuned"] = picked
    settings.update({name: dict(WINDOW, **extra) for name, extra in more.items()})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    problems = task_data(args.task).test_problem_list(args.n)
    prompts = [chat_prompt_ids(tokenizer, p.question) for p in problems]
    threads = describe_threads()  # before the engine: the plugin sets its CPU default then
    llm = LLM(model=args.model, dtype="float32",
              max_model_len=max(len(p) for p in prompts) + args.gen_length)
    params = {name: dict(extra, gen_length=args.gen_length) for name, extra in settings.items()}
    for extra in params.values():  # warm-up
        llm.generate([{"prompt_token_ids": prompts[0]}],
                     SamplingParams(temperature=0.0, max_tokens=None, extra_args=extra),
                     use_tqdm=False)
    records: dict[str, list[dict]] = {name: [] for name in settings}
    with open(args.out + ".requests.jsonl", "w") as log:
        for i, (prompt, problem) in enumerate(zip(prompts, problems)):
            for name, extra in params.items():
                record = run_one(llm, name, extra, prompt, problem, i)
                records[name].append(record)
                log.write(json.dumps(record) + "\n")
            print(f"{i + 1}/{len(prompts)}", file=sys.stderr, flush=True)
    rows = [summarize(requests, problems, tokenizer.eos_token_id, extract_answer)
            for requests in records.values()]
    add_comparisons(rows)
    dual = next(r for r in rows if r["config"] == "window/dual")["tokens_per_s"]
    for r in rows:
        r["speedup_vs_dual"] = r["tokens_per_s"] / dual
    write_report(args.out + ".md", f"Interleaved speed on `{args.model}`",
                 f"{args.n} held-out problems ({args.task}), gen_length {args.gen_length}, "
                 f"greedy, fp32, one request at a time, the settings in turn on each problem "
                 f"(per-request log: `{args.out}.requests.jsonl`). tuned = "
                 f"`{json.dumps(picked)}`.",
                 table(rows) + ["", "Against `dual`: " + ", ".join(
                     f"{r['config']} {r['speedup_vs_dual']:.2f}x" for r in rows) + "."],
                 threads=threads)
    with open(args.out + ".json", "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "token_ids"} for r in rows], f,
                  indent=1)


def run_one(llm, name: str, extra: dict, prompt: list[int], problem, index: int) -> dict:
    """One request alone, logged as bench_policies logs its requests."""
    from bench_policies import request_record
    from vllm import SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=None, extra_args=extra)
    start = time.perf_counter()
    out = llm.generate([{"prompt_token_ids": prompt}], sp, use_tqdm=False)[0]
    return request_record(name, extra, index, problem, out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
