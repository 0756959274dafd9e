"""`make demo`: Elastic-Cache through vllm.LLM on the shipped long-answer model, beside full
recompute and Fast-dLLM's dual cache, on held-out word problems at gen 512: as published, and
as `vllm-elastic tune` picked it for this model (benchmarks/results/tune_long_fp32/pick.json;
the tiny model's: tune_tiny/pick.json).

    python examples/demo.py [--n 24] [--out-dir demo-output]
    python examples/demo.py --quick        # `make demo-quick`: the tiny model, gen 64

One engine serves every run; each run decodes the same problems one request at a time (as
the benchmark tables do) under Elastic-Cache's window schedule (window 16, threshold 0.9) and
differs only in its cache policy. It prints a few problems with their answers and a table
(accuracy against the known answers, answers identical to full recompute's, answer tokens/s,
speedup over full recompute, work = token-layer evaluations / full recompute's), and writes
the table (OUT/demo.md, .json) and a plot of speed against accuracy (OUT/demo.png).
The engine's own logs are silenced (VLLM_LOGGING_LEVEL=ERROR) unless set.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOW = {"schedule": "window", "window_length": 16, "threshold": 0.9}
# (label, cache-policy settings): full recompute first, every other run is compared with it.
RUNS = [("full recompute", {"cache_policy": "none"}),
        ("Fast-dLLM dual", {"cache_policy": "dual"}),
        ("Elastic-Cache, as published (gamma 0.9)", {"cache_policy": "elastic", "gamma": 0.9})]
TUNED = "Elastic-Cache, the tune command's pick"
RESULTS = os.path.join(HERE, "..", "benchmarks", "results")
SETUPS = {  # --quick or not: model, task, canvas, problems, the `vllm-elastic tune` pick
    False: dict(model=os.path.join(HERE, "models", "llada-long-arith"), task="long",
                gen_length=512, n=24, pick=os.path.join(RESULTS, "tune_long_fp32", "pick.json")),
    True: dict(model=os.path.join(HERE, "models", "llada-tiny-arith"), task="arith",
               gen_length=64, n=64, pick=os.path.join(RESULTS, "tune_tiny", "pick.json")),
}


def tuned_run(pick_path: str) -> tuple[str, dict]:
    """The run of the tune command's pick for this model: its pick.json, the JSON one passes to
    `vllm serve --additional-config` (its gen_length gives way to the demo's)."""
    with open(pick_path) as f:
        pick = dict(json.load(f)["diffusion"])
    pick.pop("gen_length", None)
    return TUNED, pick


def run(llm, prompts: list[list[int]], gen_length: int, policy: dict) -> dict:
    """One pass over the prompts, one request at a time: answers, seconds, tokens, work."""
    from vllm import SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=None,
                        extra_args={**WINDOW, "gen_length": gen_length, **policy})
    outs, seconds = [], 0.0
    for prompt in prompts:
        start = time.perf_counter()
        outs += llm.generate([{"prompt_token_ids": prompt}], sp, use_tqdm=False)
        seconds += time.perf_counter() - start
    acct = [o.kv_transfer_params["diffusion"] for o in outs]
    return {"texts": [o.outputs[0].text for o in outs],
            "token_ids": [list(o.outputs[0].token_ids) for o in outs], "seconds": seconds,
            "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
            "work": sum(a["token_layer_evals"] for a in acct)
            / sum(a["token_layer_evals_full"] for a in acct)}


def summarize(results: list[tuple[str, dict]], answers: list[int]) -> list[dict]:
    from vllm_elastic.tools.training.data import extract_answer

    base = results[0][1]
    rows = []
    for label, r in results:
        rows.append({
            "run": label, "accuracy": sum(extract_answer(t) == a
                                          for t, a in zip(r["texts"], answers)) / len(answers),
            "same_as_full": sum(a == b for a, b in zip(r["token_ids"], base["token_ids"]))
            / len(answers),
            "tokens_per_s": r["tokens"] / r["seconds"],
            "speedup": (r["tokens"] / r["seconds"]) / (base["tokens"] / base["seconds"]),
            "work": r["work"], "seconds": r["seconds"]})
    return rows


def table(rows: list[dict], n: int) -> str:
    lines = ["| run | accuracy | same answers as full recompute | tokens/s | speedup | work |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['accuracy']:.0%} ({round(r['accuracy'] * n)}/{n}) | "
              f"{r['same_as_full']:.0%} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['work']:.3f} |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, r in enumerate(rows):
        x, y = r["speedup"], 100 * r["accuracy"]
        ax.scatter(x, y, s=60, zorder=3)
        ax.annotate(r["run"], (x, y), textcoords="offset points", fontsize=8,
                    xytext=(8, 10 if i % 2 else -14))
    accuracies = [100 * r["accuracy"] for r in rows]
    ax.set_ylim(max(0, min(accuracies) - 15), min(100, max(accuracies) + 10))
    ax.set_xlim(0, max(r["speedup"] for r in rows) * 1.6)
    ax.set_xlabel("answer tokens/s, x full recompute")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title.replace(", window", ",\nwindow"), fontsize=9)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def show_problems(problems, texts: list[str], count: int) -> None:
    from vllm_elastic.tools.training.data import extract_answer

    for p, text in list(zip(problems, texts))[:count]:
        got = extract_answer(text)
        verdict = "correct" if got == p.answer else f"expected {p.answer}"
        print(f"\nQ: {p.question}\nA: {text.strip()}\n   -> {got} ({verdict})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the tiny model at gen 64 instead")
    ap.add_argument("--n", type=int, default=None, help="held-out problems (24; quick: 64)")
    ap.add_argument("--show", type=int, default=2, help="problems printed with their answers")
    ap.add_argument("--out-dir", default="demo-output")
    args = ap.parse_args()
    setup = dict(SETUPS[args.quick], **({"n": args.n} if args.n else {}))
    from vllm import LLM

    from vllm_elastic.tools.training.batches import task_data
    from vllm_elastic.tools.training.data import chat_prompt_ids

    problems = task_data(setup["task"]).test_problem_list(setup["n"])
    llm = LLM(model=setup["model"], dtype="float32", max_num_seqs=1,
              max_model_len=setup["gen_length"] + 256)
    prompts = [chat_prompt_ids(llm.get_tokenizer(), p.question) for p in problems]
    run(llm, prompts[:1], setup["gen_length"], {})  # warm-up
    results = [(label, run(llm, prompts, setup["gen_length"], policy))
               for label, policy in RUNS + [tuned_run(setup["pick"])]]
    rows = summarize(results, [p.answer for p in problems])

    name = os.path.basename(setup["model"])
    heading = (f"{setup['n']} held-out problems, {name}, gen {setup['gen_length']}, window 16 + "
               f"threshold 0.9, one request at a time")
    print("\n" + "=" * 78 + f"\nvllm-elastic demo: {heading}\n" + "=" * 78)
    show_problems(problems, results[-1][1]["texts"], args.show)
    print(f"\n{table(rows, setup['n'])}\n")
    print(f"accuracy: exact final answer (n = {setup['n']} is a small sample: the 200-problem "
          "table is in\ndocs/BENCHMARKS.md); work: token-layer evaluations / full recompute's; "
          "tokens/s counts the\nanswer tokens returned. Threads: the plugin's CPU default "
          "(README, 'CPU threads').")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "demo.md"), "w") as f:
        f.write(f"# vllm-elastic demo\n\n{heading}.\n\n{table(rows, setup['n'])}\n")
    with open(os.path.join(args.out_dir, "demo.json"), "w") as f:
        json.dump({"setup": setup, "rows": rows}, f, indent=1)
    plot(rows, os.path.join(args.out_dir, "demo.png"), heading)
    print(f"wrote {args.out_dir}/demo.md, demo.json and demo.png (speed against accuracy)")


if __name__ == "__main__":
    main()
