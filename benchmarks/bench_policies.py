"""Accuracy and speed of every cache policy, through vllm.LLM, on held-out arithmetic problems.

    python benchmarks/bench_policies.py --model examples/models/llada-tiny-arith \
        --n 200 --gen-lengths 256 512 --out benchmarks/results/policies
    python benchmarks/bench_policies.py --model examples/models/llada-long-arith --task long \
        --n 200 --gen-lengths 256 512 --out benchmarks/results/policies_long

Rows (the issue's benchmark plan), each at every gen length:
  baseline      LLaDA blocks of 32, one token per step, full recompute (the paper's baseline)
  window/none   Elastic-Cache's window + threshold schedule, full recompute
  window/prefix, window/dual   the Fast-dLLM caches under the same schedule
  elastic/g     Elastic-Cache at gamma g (window 16, threshold 0.9, track_num 1)
  elastic-trigger/g, elastic-all/g   (beyond the paper) a trigger at layer l also
                recomputes layer l, or layers 0..l (`refresh_layers`), at gamma 0.9
  elastic-floor/g   (beyond the paper) the drift mean leaves out keys whose attention
                weights are below 1e-6 in both rows (`drift_min_weight`)
  elastic-everyN/0.9   (beyond the paper) also a full step every N steps (`refresh_interval`)
  elastic-bandB/0.9, elastic-bandB-everyN/0.9, guard-bandB/b   (beyond the paper) the same
                with `refresh_band` B: the window's span widened by B on each side
                recomputed every step
  guard/b       (beyond the paper) elastic at gamma 0.9 with the staleness guard at
                guard_bound b (`guard`, default sentinels); guard-sS/b with S sentinels;
                guard-all/b: a stale layer reruns with every layer before it
                (`refresh_layers` "all": the refresh starts at layer 0)
  w1/...        the same window committing one token per step (no threshold): many steps
                per request, the regime where reusing the cache between steps pays; compared
                with w1/none

Requests run one at a time (`--concurrency 1`, the paper's setting) unless told otherwise.
Throughput counts only tokens the user receives: the answer before its first EOS (the
authors' harness counted the MASK tail after an early EOS and had to publish an erratum).
Writes OUT.md (table + command + machine + date), OUT.json (raw rows), OUT.png (speedup
and accuracy vs gamma) and OUT.requests.jsonl (every request as it finishes: its tokens,
accounting and seconds). The long model's full table takes many CPU hours, more than one
session: `--max-minutes` stops starting requests after a budget, and `--resume` keeps the log's
requests (same weights, same task) and runs only the missing ones; a row's time is the sum of
its requests' times, so a row finished over several runs is timed like one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# vLLM's CPU default reserves a share of the whole machine's memory for KV and refuses to start
# when another process holds a little of it; one request at a time needs well under 1 GiB.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from vllm_elastic.tools.tune.runs import answer_tokens, weights_digest  # noqa: E402

WINDOW = {"schedule": "window", "window_length": 16, "threshold": 0.9}
GAMMAS = (0.5, 0.7, 0.8, 0.9, 0.95)
FLOOR = 1e-6  # drift_min_weight of the elastic-floor rows
INTERVALS = (2, 3, 4, 6, 8)  # refresh_interval of the elastic-everyN rows
GUARD_BOUNDS = ()  # guard_bound of the guard/b rows
GUARD_SENTINELS = ()  # guard_sentinels of extra guard-sS/b rows (besides the default)
BANDS = ()  # refresh_band of the elastic-bandB rows (with every interval, and the guard)


def configs(gammas=GAMMAS, w1_gammas=(0.9,), intervals=INTERVALS, guard_bounds=GUARD_BOUNDS,
            guard_sentinels=GUARD_SENTINELS, bands=BANDS) -> list[tuple[str, dict]]:
    rows = [("baseline", {"schedule": "blocks", "block_length": 32, "cache_policy": "none"}),
            ("window/none", dict(WINDOW, cache_policy="none")),
            ("window/prefix", dict(WINDOW, cache_policy="prefix")),
            ("window/dual", dict(WINDOW, cache_policy="dual"))]
    rows += [(f"elastic/{g}", dict(WINDOW, cache_policy="elastic", gamma=g, track_num=1))
             for g in gammas]
    rows += [(f"elastic-{mode}/0.9", dict(WINDOW, cache_policy="elastic", gamma=0.9,
                                          refresh_layers=mode)) for mode in ("trigger", "all")]
    rows += [(f"elastic-floor/{g}", dict(WINDOW, cache_policy="elastic", gamma=g,
                                         drift_min_weight=FLOOR)) for g in gammas]
    rows += [(f"elastic-every{n}/0.9", dict(WINDOW, cache_policy="elastic", gamma=0.9,
                                            refresh_interval=n)) for n in intervals]
    guarded = dict(WINDOW, cache_policy="elastic", gamma=0.9, guard=True)
    rows += [(f"guard/{b}", dict(guarded, guard_bound=b)) for b in guard_bounds]
    rows += [(f"guard-s{n}/{b}", dict(guarded, guard_bound=b, guard_sentinels=n))
             for n in guard_sentinels for b in guard_bounds]
    rows += [(f"guard-all/{b}", dict(guarded, guard_bound=b, refresh_layers="all"))
             for b in guard_bounds]
    for band in bands:
        banded = dict(WINDOW, cache_policy="elastic", gamma=0.9, refresh_band=band)
        rows += [(f"elastic-band{band}/0.9", banded)]
        rows += [(f"elastic-band{band}-every{n}/0.9", dict(banded, refresh_interval=n))
                 for n in intervals]
        rows += [(f"guard-band{band}/{b}", dict(guarded, guard_bound=b, refresh_band=band))
                 for b in guard_bounds]
    one = dict(WINDOW, threshold=None, tokens_per_iter=1)
    rows += [("w1/none", dict(one, cache_policy="none")),
             ("w1/dual", dict(one, cache_policy="dual")),
             ("w1/elastic/0.9", dict(one, cache_policy="elastic", gamma=0.9))]
    rows += [(f"w1/elastic-floor/{g}", dict(one, cache_policy="elastic", gamma=g,
                                            drift_min_weight=FLOOR)) for g in w1_gammas]
    return rows


def describe_threads() -> str:
    """The model's thread binding this run gets (the plugin's CPU default unless the user
    chose one), for the table's header."""
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    reserved = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU")
    if bind or reserved:
        return (f"as set by the user (VLLM_CPU_OMP_THREADS_BIND={bind}, "
                f"VLLM_CPU_NUM_OF_RESERVED_CPU={reserved})")
    return (f"the plugin's CPU default, one OpenMP thread per core on all {os.cpu_count()} "
            f"cores (vLLM's auto binding with VLLM_CPU_NUM_OF_RESERVED_CPU=0)")


def tuned_row(args) -> list[tuple[str, dict]]:
    """The tune command's pick as a row (gen_length comes from the row's gen length)."""
    if not args.tuned:
        return []
    with open(args.tuned) as f:
        picked = dict(json.load(f)["diffusion"])
    picked.pop("gen_length", None)
    return [("tuned", picked)]


def family_none(name: str) -> str:
    """The full-recompute row under the same schedule: w1/none for w1/..., else window/none."""
    return "w1/none" if name.startswith("w1/") else "window/none"


def load_requests(path: str, header: dict, resume: bool) -> dict[tuple, dict]:
    """The per-request log OUT.requests.jsonl: its first line is `header` (model digest, task),
    every other line one finished request. Without `resume` the log starts afresh; with it, the
    requests already there are kept, keyed by (config, gen_length, problem index), and a log of
    another model or task is refused rather than mixed in."""
    done = {}
    if resume and os.path.exists(path):
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if lines and lines[0] != header:
            differ = sorted(k for k in header if lines[0].get(k) != header[k])
            raise SystemExit(f"--resume: {path} was written for another {', '.join(differ)} "
                             f"({lines[0]}); move it away or drop --resume")
        done = {(r["config"], r["gen_length"], r["index"]): r for r in lines[1:]}
    if not done:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(json.dumps(header) + "\n")
    return done


def run_row(llm, name: str, extra: dict, gen: int, prompts, problems, concurrency: int,
            done: dict, log_path: str, deadline: float) -> list[dict] | None:
    """Runs the row's requests that `done` lacks, `concurrency` at a time, appending each to the
    log as it finishes (so a killed or budgeted run loses at most one batch). Returns the row's
    requests in problem order, or None when the deadline stopped it first."""
    from vllm import SamplingParams

    params = dict(extra, gen_length=gen)
    for i in range(len(prompts)):  # a resumed log must hold the same requests
        r = done.get((name, gen, i))
        if r and (r["question"], r["params"]) != (problems[i].question, params):
            raise SystemExit(f"--resume: the log's request {name} gen {gen} #{i} was "
                             f"{r['question']!r} with {r['params']}, now "
                             f"{problems[i].question!r} with {params}; start a new log")
    sp = SamplingParams(temperature=0.0, max_tokens=None, extra_args=params)
    todo = [i for i in range(len(prompts)) if (name, gen, i) not in done]
    for at in range(0, len(todo), concurrency):
        if time.time() > deadline:
            return None
        batch = todo[at: at + concurrency]
        start = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": prompts[i]} for i in batch], sp,
                               use_tqdm=False)
        seconds = (time.perf_counter() - start) / len(batch)  # a batch's time, shared evenly
        with open(log_path, "a") as f:
            for i, o in zip(batch, outputs):
                done[(name, gen, i)] = record = request_record(name, params, i, problems[i],
                                                               o, seconds)
                f.write(json.dumps(record) + "\n")
    return [done[(name, gen, i)] for i in range(len(prompts))]


def request_record(name: str, params: dict, index: int, problem, output, seconds: float) -> dict:
    """One request as the per-request log holds it (what `summarize` reads)."""
    return {"config": name, "gen_length": params["gen_length"], "index": index,
            "params": params, "question": problem.question, "text": output.outputs[0].text,
            "token_ids": list(output.outputs[0].token_ids),
            "accounting": output.kv_transfer_params["diffusion"], "seconds": seconds,
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def summarize(requests: list[dict], problems, eos_id, extract_answer) -> dict:
    """One table row from its requests (the log's records, in problem order)."""
    acct = [r["accounting"] for r in requests]
    ids = [r["token_ids"] for r in requests]
    n, seconds = len(requests), sum(r["seconds"] for r in requests)
    tokens = sum(len(answer_tokens(t, eos_id)) for t in ids)
    correct = sum(extract_answer(r["text"]) == p.answer for r, p in zip(requests, problems))
    sum_of = lambda key: sum(a[key] for a in acct)  # noqa: E731
    return {
        "config": requests[0]["config"], "gen_length": requests[0]["gen_length"], "n": n,
        "accuracy": correct / n, "tokens": tokens, "seconds": seconds,
        "tokens_per_s": tokens / seconds, "s_per_request": seconds / n,
        "steps_per_request": sum_of("steps") / n,
        # Per layer: the share of steps in which the layer ran every position.
        "refresh_rate_per_layer": [sum(a["refreshes_per_layer"][i] for a in acct)
                                   / max(1, sum_of("steps"))
                                   for i in range(len(acct[0]["refreshes_per_layer"]))],
        "work_fraction": sum_of("token_layer_evals") / sum_of("token_layer_evals_full"),
        "ratio_to_compute_bound": sum_of("token_layer_evals") / sum_of("token_layer_evals_query"),
        "dates": sorted({r["date"] for r in requests}),
        "token_ids": ids,
    }


def add_comparisons(rows: list[dict]) -> None:
    """Speedups over the paper's baseline and over `none` under the same schedule (same run),
    and agreement of each answer with that `none` row's, token for token."""
    by = {(r["config"], r["gen_length"]): r for r in rows}
    for r in rows:
        base = by.get(("baseline", r["gen_length"]))
        none = by.get((family_none(r["config"]), r["gen_length"]))
        r["speedup_vs_baseline"] = r["tokens_per_s"] / base["tokens_per_s"] if base else None
        r["speedup_vs_none"] = r["tokens_per_s"] / none["tokens_per_s"] if none else None
        if none:
            same = [a == b for a, b in zip(r["token_ids"], none["token_ids"])]
            r["agreement_with_none"] = sum(same) / len(same)


def table(rows) -> list[str]:
    head = ("| gen | config | accuracy | tokens/s | s/request | speedup vs baseline | "
            "speedup vs none (same schedule) | same answer as none | work fraction | "
            "ratio to compute bound | steps/request | refresh rate per layer |\n|" + "---|" * 12)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    return [head] + [
        f"| {r['gen_length']} | {r['config']} | {r['accuracy']:.1%} | {r['tokens_per_s']:.1f} | "
        f"{r['s_per_request']:.3f} | {fmt(r['speedup_vs_baseline'], '.2f')}x | "
        f"{fmt(r['speedup_vs_none'], '.2f')}x | {fmt(r.get('agreement_with_none'), '.0%')} | "
        f"{r['work_fraction']:.3f} | {r['ratio_to_compute_bound']:.2f} | "
        f"{r['steps_per_request']:.1f} | "
        f"{' '.join(format(x, '.2f') for x in r['refresh_rate_per_layer'])} |" for r in rows] + [
        "", "tokens/s counts answer tokens before the first EOS only. `none` under the same "
        "schedule is window/none, or w1/none for the w1 rows. Work fraction: token-layer "
        "evaluations computed / full recompute's. Ratio to compute bound: computed / the "
        "step query sets through every layer. Refresh rate per layer: share of steps in which "
        "the layer ran every position (layer 0 first)."]


def plot(rows, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for gen in sorted({r["gen_length"] for r in rows}):
        for prefix, style in (("elastic/", "o-"), ("elastic-floor/", "s:")):
            el = sorted((r for r in rows if r["gen_length"] == gen and r["config"].startswith(
                prefix)), key=lambda r: float(r["config"].split("/")[1]))
            if not el:
                continue
            g = [float(r["config"].split("/")[1]) for r in el]
            label = f"gen {gen} {prefix.rstrip('/')}"
            ax1.plot(g, [r["speedup_vs_baseline"] for r in el], style, label=label)
            ax2.plot(g, [r["accuracy"] for r in el], style, label=label)
        none = next(r for r in rows if r["gen_length"] == gen and r["config"] == "window/none")
        ax2.axhline(none["accuracy"], ls="--", lw=0.8, color=ax2.lines[-1].get_color())
    ax1.set(xlabel="gamma", ylabel="speedup vs LLaDA baseline (x)", title="Elastic-Cache speed")
    ax2.set(xlabel="gamma", ylabel="exact-match accuracy",
            title="accuracy (dashed: window/none)")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--gen-lengths", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--gammas", type=float, nargs="+", default=list(GAMMAS))
    ap.add_argument("--w1-gammas", type=float, nargs="+", default=[0.9],
                    help="gammas of the w1/elastic-floor rows")
    ap.add_argument("--intervals", type=int, nargs="*", default=list(INTERVALS),
                    help="refresh_interval of the elastic-everyN/0.9 rows")
    ap.add_argument("--guard-bounds", type=float, nargs="*", default=list(GUARD_BOUNDS),
                    help="guard_bound of the guard/b rows")
    ap.add_argument("--guard-sentinels", type=int, nargs="*", default=list(GUARD_SENTINELS),
                    help="guard_sentinels of guard-sS/b rows, at every --guard-bounds")
    ap.add_argument("--bands", type=int, nargs="*", default=list(BANDS),
                    help="refresh_band of elastic-bandB/0.9 rows (also with every --intervals "
                         "and every --guard-bounds)")
    ap.add_argument("--tuned", default=None,
                    help="pick.json of `vllm-elastic tune`: adds the row `tuned` with its "
                         "diffusion parameters (its gen_length replaced by each gen length)")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--configs", nargs="*", help="run only these config names")
    ap.add_argument("--task", choices=("arith", "long"), default="arith",
                    help="held-out problems: data.py's two-step ones or long_data.py's")
    ap.add_argument("--out", default="benchmarks/results/policies")
    ap.add_argument("--resume", action="store_true",
                    help="keep the requests OUT.requests.jsonl already holds (same model "
                         "weights and task) and run only the missing ones")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="start no request after this many minutes; the tables then hold the "
                         "finished rows, and --resume carries on")
    args = ap.parse_args()

    from report import write_report
    from transformers import AutoTokenizer
    from vllm import LLM

    from vllm_elastic.tools.training.data import chat_prompt_ids, extract_answer
    from vllm_elastic.tools.training.batches import task_data

    problems = task_data(args.task).test_problem_list(args.n)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = [chat_prompt_ids(tokenizer, p.question) for p in problems]
    log_path = args.out + ".requests.jsonl"
    done = load_requests(log_path, {"model_sha256": weights_digest(args.model),
                                    "task": args.task}, args.resume)
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else float("inf")
    max_len = max(len(p) for p in prompts) + max(args.gen_lengths)
    threads = describe_threads()  # before the engine: the plugin sets its CPU default then
    llm = LLM(model=args.model, dtype="float32", max_model_len=max_len,
              max_num_seqs=max(1, args.concurrency))
    rows, unfinished = [], []
    for gen in args.gen_lengths:
        for name, extra in configs(args.gammas, args.w1_gammas, args.intervals,
                                   args.guard_bounds, args.guard_sentinels,
                                   args.bands) + tuned_row(args):
            if args.configs and name not in args.configs:
                continue
            requests = run_row(llm, name, extra, gen, prompts, problems, args.concurrency,
                               done, log_path, deadline)
            if requests is None:
                unfinished.append(f"gen {gen} {name}")
                continue
            row = summarize(requests, problems, tokenizer.eos_token_id, extract_answer)
            rows.append(row)
            print(f"gen {gen} {name}: acc {row['accuracy']:.1%} {row['tokens_per_s']:.1f} tok/s "
                  f"work {row['work_fraction']:.3f}", file=sys.stderr, flush=True)
    if unfinished:
        print(f"--max-minutes reached; unfinished rows: {', '.join(unfinished)} (rerun with "
              f"--resume to finish them)", file=sys.stderr)
    rows.sort(key=lambda r: r["gen_length"])  # stable: configs() order within a length
    add_comparisons(rows)
    dates = sorted({d for r in rows for d in r["dates"]})
    write_report(args.out + ".md", f"Cache policies on `{args.model}`",
                 f"{args.n} held-out problems ({args.task} task), greedy, requests "
                 f"{args.concurrency} at a time, fp32. Model threads: {threads}."
                 f" Requests measured on {', '.join(dates) or '-'} (per-request "
                 f"log: `{log_path}`)."
                 + (f" Unfinished rows, not shown: {', '.join(unfinished)}." if unfinished
                    else ""), table(rows))
    with open(args.out + ".json", "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "token_ids"} for r in rows], f, indent=1)
    if any(r["config"].startswith("elastic/") for r in rows) and \
            any(r["config"] == "window/none" for r in rows):
        plot(rows, args.out + ".png")


if __name__ == "__main__":
    main()
