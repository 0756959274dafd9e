"""Where the time of one Elastic-Cache request goes, inside vLLM's engine.

    python benchmarks/profile_elastic.py --model examples/models/llada-tiny-arith \
        --gen-length 512 --out benchmarks/results/profile_elastic.md

Runs the engine in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, one torch thread, as the
serving worker uses) and wraps the pieces of a step with wall-clock timers: the engine step
(LLMEngine.step: scheduler, executor, output processing), the worker's execute_model, the model forward,
attention (page writes, K/V gathers, SDPA), the drift/most-attended statistics, and the
denoising commit (Canvas.step). Engine overhead = engine step - execute_model.

A second run of the same request under torch.profiler splits the engine steps into time inside
torch operators (the kernels: matmuls, SDPA, gathers, norms; summed self time of every aten
op) and everything else (Python: vLLM's scheduler and output path, our runner, batch plans,
layouts, policy decisions). The profiler's own per-op cost lands in "everything else", so that
share is an upper bound. Writes OUT (markdown) and the same figures as JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--gen-length", type=int, default=512)
    ap.add_argument("--gamma", type=float, default=0.9)
    ap.add_argument("--threshold", type=lambda v: None if v == "none" else float(v), default=0.9,
                    help="window commit threshold; 'none' commits one token per step")
    ap.add_argument("--drift-min-weight", type=float, default=0.0)
    ap.add_argument("--policy", default="elastic", choices=("none", "prefix", "dual", "elastic"))
    ap.add_argument("--task", default="arith", choices=("arith", "long"))
    ap.add_argument("--window-length", type=int, default=16)
    ap.add_argument("--out", default="benchmarks/results/profile_elastic.md")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.v1.engine.llm_engine import LLMEngine

    import vllm_elastic.kernels.attention as attention_module
    from vllm_elastic.kernels.attention import DiffusionAttention
    from vllm_elastic.engine.batch import DiffusionBatch
    from vllm_elastic.decoding.canvas import Canvas
    from vllm_elastic.engine.runner import DiffusionModelRunner
    from vllm_elastic.engine.executor import StepExecutor
    from vllm_elastic.tools.training.data import chat_prompt_ids
    from vllm_elastic.tools.training.batches import task_data

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompt = chat_prompt_ids(tokenizer, task_data(args.task).test_problem_list(1)[0].question)
    llm = LLM(model=args.model, dtype="float32", max_model_len=len(prompt) + args.gen_length)
    extra = dict(schedule="window", window_length=args.window_length, threshold=args.threshold,
                 tokens_per_iter=1, cache_policy=args.policy, gen_length=args.gen_length)
    if args.policy == "elastic":
        extra.update(gamma=args.gamma, drift_min_weight=args.drift_min_weight)
    sp = SamplingParams(temperature=0.0, max_tokens=None, extra_args=extra)
    llm.generate([{"prompt_token_ids": prompt}], sp, use_tqdm=False)  # warm-up

    timed(LLMEngine, "step", "engine step")
    timed(DiffusionModelRunner, "execute_model", "worker execute_model")
    timed(StepExecutor, "run", "model forward")
    timed(DiffusionAttention, "forward", "attention (incl. statistics)")
    timed(attention_module, "drift_rows_before", "drift + most-attended statistics")
    timed(attention_module, "layer_statistics", "drift + most-attended statistics")
    timed(attention_module, "torch_varlen_attention", "varlen attention kernel (gathers + SDPA)")
    timed(DiffusionBatch, "plan_layer", "layer-input cache + refresh widening")
    timed(DiffusionBatch, "observe", "observations")
    timed(Canvas, "step", "denoising commit (Canvas.step)")
    start = time.perf_counter()
    out = llm.generate([{"prompt_token_ids": prompt}], sp, use_tqdm=False)[0]
    total = time.perf_counter() - start
    acct = out.kv_transfer_params["diffusion"]

    engine = TIMES["engine step"]
    kernels, profiled_steps = _kernel_time(llm, prompt, sp)
    rows = [("request wall time (generate)", total), *TIMES.items(),
            ("engine overhead (engine step - execute_model)",
             engine - TIMES["worker execute_model"]),
            ("attention without statistics",
             TIMES["attention (incl. statistics)"] - TIMES["drift + most-attended statistics"]),
            ("model forward outside attention",
             TIMES["model forward"] - TIMES["attention (incl. statistics)"]
             - TIMES["layer-input cache + refresh widening"] - TIMES["observations"])]
    split = [f"| time in torch operators (kernels) | {kernels:.3f} | "
             f"{kernels / profiled_steps:.1%} |",
             f"| everything else (Python, engine, plans; upper bound) | "
             f"{profiled_steps - kernels:.3f} | {1 - kernels / profiled_steps:.1%} |"]
    lines = ["| piece | seconds | share of engine steps | calls |", "|---|---|---|---|"]
    lines += [f"| {name} | {sec:.3f} | {sec / engine:.1%} | {CALLS.get(name, '')} |"
              for name, sec in rows]
    knobs = (f"gamma {args.gamma}, drift_min_weight {args.drift_min_weight}, "
             if args.policy == "elastic" else "")
    text = "\n".join([
        f"# Profile of one `{args.policy}` request on `{os.path.basename(args.model.rstrip('/'))}`"
        f" (gen {args.gen_length}, window {args.window_length}, {knobs}"
        f"threshold {args.threshold})",
        "", f"Command: `python {' '.join(sys.argv)}`", "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. CPU, one torch thread, "
        f"engine in-process. Steps: {acct['steps']}; work fraction {acct['work_fraction']}; "
        f"refreshes per layer {acct['refreshes_per_layer']}. Nested rows are included in "
        f"their parents.", "", *lines, "",
        "The same request again under torch.profiler (engine steps only; the profiler slows "
        "them, so shares, not seconds, are the figure):", "",
        "| piece | seconds | share of profiled engine steps |", "|---|---|---|", *split, ""])
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"model": args.model, "policy": args.policy, "task": args.task,
                   "gen_length": args.gen_length, "window_length": args.window_length,
                   "threshold": args.threshold, "threads": 1,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "steps": acct["steps"], "work_fraction": acct["work_fraction"],
                   "refreshes_per_layer": acct["refreshes_per_layer"],
                   "engine_step_s": engine,
                   "pieces": [{"piece": name, "seconds": sec, "share_of_engine_steps": sec / engine,
                               "calls": CALLS.get(name)} for name, sec in rows],
                   "profiled_steps_s": profiled_steps, "torch_operator_s": kernels,
                   "torch_operator_share": kernels / profiled_steps}, f, indent=1)
    print(text)


def _kernel_time(llm, prompt, sp) -> tuple[float, float]:
    """(seconds inside aten operators, seconds of engine steps) for one request run under
    torch.profiler. Self times of aten ops add up without double counting nested ops."""
    from torch.profiler import ProfilerActivity, profile

    saved_times, saved_calls = dict(TIMES), dict(CALLS)
    before = TIMES["engine step"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        llm.generate([{"prompt_token_ids": prompt}], sp, use_tqdm=False)
    steps = TIMES["engine step"] - before
    kernels = sum(e.self_cpu_time_total for e in prof.key_averages()
                  if e.key.startswith("aten::")) / 1e6
    TIMES.clear()  # the tables report the unprofiled run
    TIMES.update(saved_times)
    CALLS.clear()
    CALLS.update(saved_calls)
    return kernels, steps


if __name__ == "__main__":
    main()
