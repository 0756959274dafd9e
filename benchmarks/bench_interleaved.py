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
accuracy is exact match, as in bench_policies.py. Writes OUT.md and OUT.json
(`plot_frontier.py OUT.json --gen-length G --out OUT.png` draws it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SETTINGS = {"none": {"cache_policy": "none"}, "dual": {"cache_policy": "dual"},
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

    from bench_policies import WINDOW, describe_threads
    from report import write_report
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from vllm_elastic.tools.training.batches import task_data
    from vllm_elastic.tools.training.data import chat_prompt_ids, extract_answer
    from vllm_elastic.tools.tune.runs import answer_tokens

    with open(args.tuned) as f:
        picked = json.load(f)["diffusion"]
    settings = {name: dict(WINDOW, **extra) for name, extra in SETTINGS.items()}
    settings["tuned"] = picked
    settings.update({name: dict(WINDOW, **extra) for name, extra in more.items()})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    task = task_data(args.task)
    problems = task.test_problem_list(args.n)
    prompts = [chat_prompt_ids(tokenizer, p.question) for p in problems]
    threads = describe_threads()  # before the engine: the plugin sets its CPU default then
    llm = LLM(model=args.model, dtype="float32",
              max_model_len=max(len(p) for p in prompts) + args.gen_length)
    params = {name: SamplingParams(temperature=0.0, max_tokens=None,
                                   extra_args=dict(extra, gen_length=args.gen_length))
              for name, extra in settings.items()}
    for sp in params.values():  # warm-up
        llm.generate([{"prompt_token_ids": prompts[0]}], sp, use_tqdm=False)
    totals = {name: {"seconds": 0.0, "tokens": 0, "correct": 0} for name in settings}
    for i, (prompt, problem) in enumerate(zip(prompts, problems)):
        for name, sp in params.items():
            start = time.perf_counter()
            out = llm.generate([{"prompt_token_ids": prompt}], sp, use_tqdm=False)[0]
            total = totals[name]
            total["seconds"] += time.perf_counter() - start
            ids = answer_tokens(list(out.outputs[0].token_ids), tokenizer.eos_token_id)
            total["tokens"] += len(ids)
            total["correct"] += int(extract_answer(out.outputs[0].text) == problem.answer)
        print(f"{i + 1}/{len(prompts)}", file=sys.stderr, flush=True)
    for total in totals.values():
        total["tokens_per_s"] = total["tokens"] / total["seconds"]
        total["accuracy"] = total["correct"] / len(prompts)
    none, dual = totals["none"]["tokens_per_s"], totals["dual"]["tokens_per_s"]
    lines = ["| setting | accuracy | tokens/s | vs full recompute | vs `dual` |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {t['accuracy']:.1%} | {t['tokens_per_s']:.1f} | "
              f"{t['tokens_per_s'] / none:.2f}x | {t['tokens_per_s'] / dual:.2f}x |"
              for name, t in totals.items()]
    write_report(args.out + ".md", f"Interleaved speed on `{args.model}`",
                 f"{args.n} held-out problems ({args.task}), gen_length {args.gen_length}, "
                 f"greedy, fp32, one request at a time, the settings in turn on each problem. "
                 f"tuned = `{json.dumps(picked)}`.", lines, threads=threads)
    with open(args.out + ".json", "w") as f:
        json.dump({"settings": settings, "totals": totals}, f, indent=1)


if __name__ == "__main__":
    main()
