"""Our engine beside llama.cpp's diffusion example (`llama-diffusion-cli`), on the same CPU.

    python benchmarks/bench_llamacpp.py --llama-cpp /path/to/llama.cpp \
        --model examples/models/llada-tiny-arith --threads 1 2 --out benchmarks/results/llamacpp

llama.cpp's example decodes LLaDA-format models on CPU with full recompute every step, one
request, no cache. Its source ships in the `llama-cpp-python` source distribution
(`vendor/llama.cpp`); build the target with
`cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF && cmake --build build --target
llama-diffusion-cli`. This script:

1. converts our checkpoint with llama.cpp's `convert_hf_to_gguf.py` (f32), forcing the BPE
   pre-tokenizer name (our local tokenizer is not in its table of known hashes). `refact` is
   ours exactly: digits one by one, then GPT-2's byte-level split (`qwen2` is not: it merges
   a run of newlines with the text before it, which changes the chat header's tokens). The
   GGUF carries our chat template; llama.cpp applies it to the question and drops the
   template's BOS because it adds its own, so both engines decode the same prompt ids.
2. Full recompute, matched: the same prompt, the same canvas (prompt + gen_length), one token
   per step, greedy low-confidence remasking over ONE block spanning the whole answer. (One
   block because llama.cpp's block schedule counts blocks over the whole context, prompt
   included: `max_length / block_length` blocks starting at the prompt's end, the steps split
   evenly over them, so blocks of 32 would not be LLaDA's blocks of 32.) Reported: time per
   step (llama.cpp's own "time per step"; ours: wall time / steps run) and how many answers
   agree token for token; the plain-PyTorch oracle (`vllm_elastic/oracles/llada.py`, no engine)
   runs the same schedule, so its step time is ours without vLLM around it.
3. Ours with the configurations a user would run: LLaDA's blocks of 32 (full recompute,
   Fast-dLLM prefix and dual) and the window + threshold schedule (full recompute, dual,
   Elastic-Cache), end-to-end answer tokens/s and exact-match accuracy, one request at a time
   as llama.cpp runs.

Each engine counts its own answer tokens (before the first EOS). llama.cpp runs every step of
its schedule; ours stops when the answer's EOS is final. Both at the same thread count (ours:
vLLM's worker bound to that many cores by VLLM_CPU_OMP_THREADS_BIND; llama.cpp: `-t`/`-tb`).
Not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_batching import WINDOW  # noqa: E402
from report import write_report  # noqa: E402

CONVERT_SHIM = """
import sys
sys.path.insert(0, {root!r})
sys.argv = ["convert_hf_to_gguf.py"] + {args!r}
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
exec(open({script!r}).read(), {{"__name__": "__main__", "__file__": {script!r}}})
"""

# Our configurations (label -> extra_args beyond gen_length). "matched" is llama.cpp's
# schedule: one block over the answer, one token per step, full recompute.
CONFIGS = {
    "matched": {"cache_policy": "none"},  # block_length = steps = gen_length, set below
    "blocks 32, none": {"block_length": 32, "cache_policy": "none"},
    "blocks 32, prefix": {"block_length": 32, "cache_policy": "prefix"},
    "blocks 32, dual": {"block_length": 32, "cache_policy": "dual"},
    "window + threshold 0.9, none": {**WINDOW, "cache_policy": "none"},
    "window + threshold 0.9, dual": {**WINDOW, "cache_policy": "dual"},
    "window + threshold 0.9, elastic 0.9": {**WINDOW, "cache_policy": "elastic", "gamma": 0.9},
}


def convert(llama_cpp: str, model: str, out: str, pre: str) -> None:
    script = os.path.join(llama_cpp, "convert_hf_to_gguf.py")
    code = CONVERT_SHIM.format(root=llama_cpp, args=[model, "--outfile", out, "--outtype", "f32"],
                               pre=pre, script=script)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   input="y\n")


def run_llamacpp(cli: str, gguf: str, question: str, canvas: int, steps: int,
                 threads: int, attempts: int = 3) -> dict:
    """One request through llama-diffusion-cli: one block over the whole answer (see above).
    Its log is written by a background thread that sometimes loses the last lines (timings and
    answer, which come together) at exit; such a run is repeated, up to `attempts` times."""
    cmd = [cli, "-m", gguf, "-p", question, "-ub", str(canvas), "-c", str(canvas),
           "-b", str(canvas), "--diffusion-steps", str(steps),
           "--diffusion-block-length", str(canvas), "--temp", "0",
           "-t", str(threads), "-tb", str(threads)]
    for _ in range(attempts):
        res = subprocess.run(cmd, capture_output=True, text=True)
        log = (res.stdout + res.stderr).replace("\r", "\n")
        m = re.search(r"total time: ([\d.]+)ms, time per step: ([\d.]+)ms.*?\n", log)
        if res.returncode:
            break
        if not m:
            continue
        # The answer follows the timing line; log lines carry a "0.00.123.456 I" stamp.
        answer = "\n".join(line for line in log[m.end():].splitlines()
                           if not re.match(r"^\d+\.\d+\.\d+\.\d+ ", line)).strip()
        return {"total_ms": float(m.group(1)), "step_ms": float(m.group(2)), "answer": answer}
    raise RuntimeError(f"llama-diffusion-cli failed ({res.returncode}):\n{log[-3000:]}")


def run_oracle(model_dir: str, ids: list[list[int]], gen: int, threads: int, eos: int) -> dict:
    """The plain-PyTorch oracle (vllm_elastic.oracles.llada, no engine) on the matched schedule:
    one full forward of the canvas per step, all `gen` steps (it does not stop at the EOS).
    Its time per step is our full-recompute step without vLLM around it."""
    import torch

    from vllm_elastic.params import DiffusionParams
    from vllm_elastic.oracles.llada import ReferenceLLaDA, generate

    torch.set_num_threads(threads)
    model = ReferenceLLaDA.from_pretrained(model_dir)
    params = DiffusionParams(gen_length=gen, block_length=gen, steps=gen)
    seconds, answers = 0.0, []
    for i in ids:
        t0 = time.perf_counter()
        out = generate(model, i, params)
        seconds += time.perf_counter() - t0
        answers.append(out[:out.index(eos)] if eos in out else out)
    return {"seconds": seconds, "steps": gen * len(ids), "answer_ids": answers}


def child(spec: dict) -> None:
    """Our engine, one request at a time per configuration; prints one RESULT line."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tok = AutoTokenizer.from_pretrained(spec["model"])
    ids, gen = spec["prompt_ids"], spec["gen_length"]
    llm = LLM(model=spec["model"], dtype="float32", max_model_len=max(map(len, ids)) + gen)
    llm.generate([{"prompt_token_ids": ids[0]}], use_tqdm=False)  # warm-up
    results = []
    for label in spec["configs"]:
        extra = {"gen_length": gen, **CONFIGS[label]}
        if "window_length" in extra:
            extra["window_length"] = spec["window_length"]
        if label == "matched":
            extra.update(block_length=gen, steps=gen)
        sp = SamplingParams(temperature=0.0, max_tokens=None, extra_args=extra)
        seconds, steps, answer_ids = 0.0, 0, []
        for i in ids:
            t0 = time.perf_counter()
            o = llm.generate([{"prompt_token_ids": i}], sp, use_tqdm=False)[0]
            seconds += time.perf_counter() - t0
            steps += o.kv_transfer_params["diffusion"]["steps"]
            t = list(o.outputs[0].token_ids)
            answer_ids.append(t[:t.index(tok.eos_token_id)] if tok.eos_token_id in t else t)
        results.append({"config": label, "seconds": seconds, "steps": steps,
                        "answer_ids": answer_ids})
    print("RESULT " + json.dumps(results), flush=True)


def ours(spec: dict, threads: int) -> list[dict]:
    # 1 GiB of KV is plenty for one request at a time (and vLLM's default, 92% of memory,
    # fails to start beside any other process).
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ,
           "VLLM_CPU_OMP_THREADS_BIND": "0" if threads == 1 else f"0-{threads - 1}"}
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                         capture_output=True, text=True)
    # The RESULT line may follow a progress bar's text on the same line (no newline after it).
    line = next((x for x in res.stdout.splitlines() if "RESULT " in x), None)
    if line is None:
        raise RuntimeError(f"our engine failed:\n{(res.stdout + res.stderr)[-3000:]}")
    return json.loads(line.split("RESULT ", 1)[1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree with build/")
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--task", choices=("arith", "long"), default="arith")
    ap.add_argument("--n", type=int, default=10, help="held-out prompts")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--window-length", type=int, default=16,
                    help="window schedule's width (the authors use 32 for GSM8K)")
    ap.add_argument("--pre-tokenizer", default="refact")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", default="benchmarks/results/llamacpp")
    args = ap.parse_args()
    configs = ["matched"] + [c for c in args.configs if c != "matched"]

    from transformers import AutoTokenizer

    from vllm_elastic.tools.training.data import chat_prompt_ids, extract_answer
    from vllm_elastic.tools.training.batches import task_data

    cli = os.path.join(args.llama_cpp, "build", "bin", "llama-diffusion-cli")
    gguf = os.path.join(tempfile.mkdtemp(), "model.gguf")
    convert(args.llama_cpp, args.model, gguf, args.pre_tokenizer)
    problems = task_data(args.task).test_problem_list(args.n)
    tok = AutoTokenizer.from_pretrained(args.model)
    ids = [chat_prompt_ids(tok, p.question) for p in problems]
    spec = {"model": args.model, "prompt_ids": ids, "gen_length": args.gen_length,
            "window_length": args.window_length, "configs": configs}

    def decode(answer_ids: list[list[int]]) -> list[str]:
        return [tok.decode(a, skip_special_tokens=True).strip() for a in answer_ids]

    def accuracy(answers: list[str]) -> float:
        return sum(extract_answer(a) == p.answer for a, p in zip(answers, problems)) / len(problems)

    rows = []
    for threads in args.threads:
        llama = [run_llamacpp(cli, gguf, p.question, len(i) + args.gen_length, args.gen_length,
                              threads) for p, i in zip(problems, ids)]
        l_answers = [r["answer"] for r in llama]
        l_tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in l_answers)
        l_seconds = sum(r["total_ms"] for r in llama) / 1000
        base = {"threads": threads, "engine": "llama.cpp", "config": "matched",
                "step_ms": sum(r["step_ms"] for r in llama) / len(llama),
                "steps": args.gen_length * len(llama), "seconds": l_seconds,
                "tokens": l_tokens, "tokens_per_s": l_tokens / l_seconds,
                "accuracy": accuracy(l_answers), "answers": l_answers}
        rows.append(base)
        oracle = run_oracle(args.model, ids, args.gen_length, threads, tok.eos_token_id)
        o_tokens = sum(map(len, oracle["answer_ids"]))
        o_answers = decode(oracle["answer_ids"])
        rows.append({"threads": threads, "engine": "PyTorch oracle (no engine)",
                     "config": "matched", "step_ms": 1000 * oracle["seconds"] / oracle["steps"],
                     "steps": oracle["steps"], "seconds": oracle["seconds"], "tokens": o_tokens,
                     "tokens_per_s": o_tokens / oracle["seconds"],
                     "vs_llamacpp": (o_tokens / oracle["seconds"]) / base["tokens_per_s"],
                     "accuracy": accuracy(o_answers), "answers": o_answers})
        for r in ours(spec, threads):
            answer_ids = r.pop("answer_ids")
            answers, tokens = decode(answer_ids), sum(map(len, answer_ids))
            row = {"threads": threads, "engine": "vllm-elastic", **r, "tokens": tokens,
                   "step_ms": 1000 * r["seconds"] / r["steps"],
                   "tokens_per_s": tokens / r["seconds"], "accuracy": accuracy(answers),
                   "vs_llamacpp": (tokens / r["seconds"]) / base["tokens_per_s"],
                   "answers": answers}
            if r["config"] == "matched":
                row["same_answers"] = sum(a == b for a, b in zip(answers, l_answers))
                row["same_ids_as_oracle"] = sum(
                    a == b for a, b in zip(answer_ids, oracle["answer_ids"]))
            rows.append(row)
        base["vs_llamacpp"] = 1.0

    body = ["| threads | engine | configuration | ms per step | steps | seconds | answer tokens/s "
            "| vs llama.cpp | exact match |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        agree = (f" ({r['same_answers']}/{args.n} answers = llama.cpp's, "
                 f"{r['same_ids_as_oracle']}/{args.n} = the oracle's)" if "same_answers" in r else "")
        body.append(f"| {r['threads']} | {r['engine']} | {r['config']}{agree} | {r['step_ms']:.1f} "
                    f"| {r['steps']} | {r['seconds']:.2f} | {r['tokens_per_s']:.1f} "
                    f"| {r['vs_llamacpp']:.2f}x | {100 * r['accuracy']:.0f}% |")
    body += ["", "`matched`: both engines, full recompute, one block over the "
             f"{args.gen_length}-token answer canvas, one token per step (llama.cpp's block "
             "schedule counts blocks over the whole context, so this is the one block layout "
             "both share). llama.cpp runs all of its steps; ours stops when the answer's EOS is "
             "final, so its ms per step is total time / steps actually run. The PyTorch oracle "
             "(`vllm_elastic/oracles/llada.py`: a bare forward of the canvas per step, no engine, all "
             "steps like llama.cpp) shows what our engine adds to a step. Answer tokens/s: "
             "each engine's own answer tokens (before the first EOS) per second, one request at "
             "a time. Matched answers can differ where llama.cpp's greedy step differs from ours: "
             "it does not exclude the MASK token from the argmax (we do, docs/DECODING.md), and "
             "near-ties can break differently under different float kernels."]
    with open(args.out + ".json", "w") as f:
        json.dump({"model": args.model, "task": args.task, "n": args.n,
                   "gen_length": args.gen_length, "window_length": args.window_length,
                   "rows": rows}, f, indent=1)
    write_report(args.out + ".md", "vllm-elastic beside llama.cpp's diffusion example",
                 f"`{args.model}`, {args.n} held-out chat prompts ({args.task}), gen "
                 f"{args.gen_length}, window {args.window_length}, greedy, fp32 (GGUF f32), one "
                 "request at a time.", body,
                 threads=f"{'/'.join(map(str, args.threads))} thread(s) for each engine's model")


if __name__ == "__main__":
    main()
