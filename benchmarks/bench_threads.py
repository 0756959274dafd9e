"""CPU configurations of vllm.LLM: tokens/s and CPU seconds per process.

    python benchmarks/bench_threads.py --model examples/models/llada-long-arith --task long \
        --requests 64 --gen-length 512 --out benchmarks/results/threads_long
    python benchmarks/bench_threads.py --model examples/models/llada-tiny-arith \
        --requests 32 --gen-length 256 --out benchmarks/results/threads

Each configuration runs in its own process (vLLM reads the variables at engine start):
  old default   vLLM's own CPU binding, `VLLM_CPU_OMP_THREADS_BIND=auto`, mp executor: one core
                per rank reserved for the engine core (on 2 cores the model gets one);
  new default   what the plugin picks with nothing set (integration/cpu_threads.py): on a
                machine of at most 4 CPUs with one rank, `VLLM_CPU_NUM_OF_RESERVED_CPU=0`;
  uni           the worker inside the `LLM` process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`,
                `distributed_executor_backend="uni"`, OpenMP threads bound by OMP_PLACES):
                offline only, `vllm serve` always runs the engine core in its own process.
For each policy (window 16 + threshold 0.9) and concurrency (requests submitted together in
waves) it measures answer tokens/s and, with psutil, the CPU seconds of every process of the
engine (frontend = the `LLM` process, engine core, worker) over the timed part. Writes OUT.md
and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CONFIGS = {
    "old default": ({"VLLM_CPU_OMP_THREADS_BIND": "auto"}, {}),
    "new default": ({}, {}),
    "uni": ({"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_PROC_BIND": "true"},
            {"distributed_executor_backend": "uni"}),
}


def process_role(proc, me: int, root: str = "frontend") -> str:
    if proc.pid == me:
        return root
    name = " ".join(proc.cmdline())
    return "engine core" if "EngineCore" in name else "worker" if "Worker" in name else "other"


def cpu_seconds(procs, me: int, root: str = "frontend") -> dict[str, float]:
    """User + system CPU seconds of each process, summed by role (`root` names process me)."""
    out: dict[str, float] = {}
    for p in procs:
        try:
            times = p.cpu_times()
        except Exception:  # a helper process that ended
            continue
        role = process_role(p, me, root)
        out[role] = out.get(role, 0.0) + times.user + times.system
    return out


def measure_cpu(llm, prompts, extra: dict, batch: int, eos_id: int) -> dict:
    """bench_batching's measurement, with each engine process's CPU seconds over it."""
    import psutil
    from bench_batching import measure

    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    before = cpu_seconds(procs, me.pid)
    row = measure(llm, prompts, extra, batch, eos_id)
    after = cpu_seconds(procs, me.pid)
    cpu = {role: round(after[role] - before.get(role, 0.0), 2) for role in after}
    return {**row, "cpu_s": cpu, "cpu_s_per_token": sum(cpu.values()) / max(1, row["tokens"])}


def child(args: argparse.Namespace) -> None:
    """One engine under this process's environment; prints one JSON line."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_batching import POLICIES, WINDOW
    from transformers import AutoTokenizer
    from vllm import LLM

    from vllm_elastic.tools.training.batches import task_data
    from vllm_elastic.tools.training.data import chat_prompt_ids

    problems = task_data(args.task).test_problem_list(args.requests)
    tok = AutoTokenizer.from_pretrained(args.model)
    prompts = [chat_prompt_ids(tok, p.question) for p in problems]
    llm = LLM(model=args.model, dtype="float32", max_num_seqs=max(args.batch_sizes),
              max_model_len=max(len(p) for p in prompts) + args.gen_length,
              **CONFIGS[args.config][1])
    llm.generate([{"prompt_token_ids": prompts[0]}], use_tqdm=False)  # warm-up
    rows = []
    for policy in args.policies:
        extra = dict(WINDOW, gen_length=args.gen_length, **POLICIES[policy])
        for batch in args.batch_sizes:
            rows.append({"policy": policy, "concurrency": batch,
                         **measure_cpu(llm, prompts, extra, batch, tok.eos_token_id)})
    print("RESULT " + json.dumps(rows), flush=True)


def run_config(args: argparse.Namespace, name: str) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--task", args.task,
           "--requests", str(args.requests), "--gen-length", str(args.gen_length),
           "--batch-sizes", *map(str, args.batch_sizes), "--policies", *args.policies]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")}
    env.update(CONFIGS[name][0])
    if name == "uni":
        env["OMP_PLACES"] = ",".join(f"{{{c}}}" for c in sorted(os.sched_getaffinity(0)))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    rows = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    return [{"config": name, **r} for r in rows]


def table(results: list[dict]) -> list[str]:
    base = {(r["policy"], r["concurrency"]): r for r in results if r["config"] == "old default"}
    body = ["| configuration | policy | concurrency | tokens/s | vs old default | CPU-s per "
            "token | frontend CPU-s | engine core CPU-s | worker CPU-s | wall s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        old, cpu = base[(r["policy"], r["concurrency"])], r["cpu_s"]
        body.append(
            f"| {r['config']} | {r['policy']} | {r['concurrency']} | {r['tokens_per_s']:.1f} | "
            f"{r['tokens_per_s'] / old['tokens_per_s']:.2f}x | {1000 * r['cpu_s_per_token']:.1f}m"
            f" | {cpu.get('frontend', 0):.1f} | {cpu.get('engine core', '-')} | "
            f"{cpu.get('worker', '-')} | {r['seconds']:.1f} |")
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--task", choices=("arith", "long"), default="arith")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--policies", nargs="+", default=["none", "dual", "elastic"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", default="benchmarks/results/threads")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.config = args.child
        return child(args)

    from report import write_report

    results = [r for name in args.configs for r in run_config(args, name)]
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    write_report(args.out + ".md", f"CPU configurations of vllm.LLM (`{args.model}`)",
                 f"{args.requests} held-out prompts ({args.task}), gen {args.gen_length}, window "
                 f"16 + threshold 0.9, greedy, fp32; one engine per configuration (see "
                 f"benchmarks/bench_threads.py for each). CPU-s: user + system seconds of each "
                 f"process over the timed part (psutil); 'CPU-s per token' sums every process "
                 f"(m = 1e-3).", table(results),
                 threads="threads and executor per configuration, as named in each row")


if __name__ == "__main__":
    main()
