"""Our engine beside llama.cpp's diffusion example (`llama-diffusion-cli`), on the same CPU.

    python benchmarks/bench_llamacpp.py --llama-cpp /path/to/llama.cpp \
        --model examples/models/llada-tiny-arith --threads 1 --out benchmarks/results/llamacpp

llama.cpp's example decodes LLaDA-format models on CPU with full recompute every step, one
request, no cache. Its source ships in the `llama-cpp-python` source distribution
(`vendor/llama.cpp`); build the target with
`cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target llama-diffusion-cli`.
This script:

1. converts our checkpoint with llama.cpp's `convert_hf_to_gguf.py` (f32), forcing the BPE
   pre-tokenizer name (our local tokenizer is not in its table of known hashes; `qwen2`'s
   splits digits one by one, as ours does);
2. runs both on the same prompts, the same canvas (gen_length) and LLaDA's block schedule with
   the same step count, greedy, at the same thread count (ours: vLLM's worker bound to
   `--threads` cores by VLLM_CPU_OMP_THREADS_BIND; llama.cpp: `-t`);
3. reports time per full-recompute step (llama.cpp's own "time per step"; ours: wall time /
   steps of the `none` policy) and end-to-end tokens/s, ours under each cache policy too.

llama.cpp runs every step of the schedule; ours stops when the answer's EOS is final, so the
end-to-end comparison counts answer tokens (before the first EOS) for both. Not in CI.

Status (2026-12-01): step 1 (conversion of the bundled checkpoints) was run and works; the
comparison itself has not been run yet (building the CLI takes most of an idle 2-core machine
for tens of minutes), so no results table exists.
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
from report import write_report  # noqa: E402

CONVERT_SHIM = """
import sys
sys.path.insert(0, {root!r})
sys.argv = ["convert_hf_to_gguf.py"] + {args!r}
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
exec(open({script!r}).read(), {{"__name__": "__main__", "__file__": {script!r}}})
"""


def convert(llama_cpp: str, model: str, out: str, pre: str) -> None:
    script = os.path.join(llama_cpp, "convert_hf_to_gguf.py")
    code = CONVERT_SHIM.format(root=llama_cpp, args=[model, "--outfile", out, "--outtype", "f32"],
                               pre=pre, script=script)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def run_llamacpp(cli: str, gguf: str, prompt: str, canvas: int, steps: int, block: int,
                 threads: int) -> dict:
    # --in-prefix "" turns llama.cpp's own chat templating off: the prompt is already the
    # chat-formatted text both engines decode.
    cmd = [cli, "-m", gguf, "-p", prompt, "--in-prefix", "", "-ub", str(canvas), "-c", str(canvas),
           "-b", str(canvas), "--diffusion-steps", str(steps), "--diffusion-block-length",
           str(block), "--temp", "0", "-t", str(threads), "-tb", str(threads), "--no-warmup"]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = res.stdout + res.stderr
    m = re.search(r"total time: ([\d.]+)ms, time per step: ([\d.]+)ms", log)
    if res.returncode or not m:
        raise RuntimeError(f"llama-diffusion-cli failed ({res.returncode}):\n{log[-3000:]}")
    return {"total_ms": float(m.group(1)), "step_ms": float(m.group(2)), "wall_s": wall,
            "log_tail": log[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree with build/")
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--task", choices=("arith", "long"), default="arith")
    ap.add_argument("--n", type=int, default=5, help="prompts")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pre-tokenizer", default="qwen2")
    ap.add_argument("--policies", nargs="+", default=["none", "prefix", "dual"])
    ap.add_argument("--out", default="benchmarks/results/llamacpp")
    args = ap.parse_args()

    cli = os.path.join(args.llama_cpp, "build", "bin", "llama-diffusion-cli")
    gguf = os.path.join(tempfile.mkdtemp(), "model.gguf")
    convert(args.llama_cpp, args.model, gguf, args.pre_tokenizer)

    from vllm_elastic.training.train import task_data

    problems = task_data(args.task).test_problem_list(args.n)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    # The chat-formatted prompt text, the same string for both engines (the model was trained
    # on chat prompts); ours gets its token ids, llama.cpp the text.
    prompts = [tok.apply_chat_template([{"role": "user", "content": p.question}],
                                       add_generation_prompt=True, tokenize=False)
               for p in problems]
    steps = args.gen_length  # one token per step: LLaDA's baseline, full recompute
    rows, llama = [], []
    for p in prompts:
        canvas = len(tok(p, add_special_tokens=False)["input_ids"]) + args.gen_length
        llama.append(run_llamacpp(cli, gguf, p, canvas, steps, args.block_length, args.threads))
    rows.append({"engine": "llama.cpp", "policy": "none (full recompute)",
                 "step_ms": sum(r["step_ms"] for r in llama) / len(llama),
                 "seconds": sum(r["total_ms"] for r in llama) / 1000})

    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0" if args.threads == 1 else
           f"0-{args.threads - 1}"}
    code = f"""
import json, sys, time
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from vllm import LLM, SamplingParams
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({args.model!r})
prompts = {prompts!r}
ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
llm = LLM(model={args.model!r}, dtype="float32",
          max_model_len=max(map(len, ids)) + {args.gen_length})
llm.generate([{{"prompt_token_ids": ids[0]}}], use_tqdm=False)
out = []
for policy in {args.policies!r}:
    extra = {{"gen_length": {args.gen_length}, "block_length": {args.block_length},
             "cache_policy": policy}}
    sp = SamplingParams(temperature=0.0, max_tokens=None, extra_args=extra)
    seconds, steps, tokens = 0.0, 0, 0
    for i in ids:
        t0 = time.perf_counter()
        o = llm.generate([{{"prompt_token_ids": i}}], sp, use_tqdm=False)[0]
        seconds += time.perf_counter() - t0
        steps += o.kv_transfer_params["diffusion"]["steps"]
        t = list(o.outputs[0].token_ids)
        tokens += t.index(tok.eos_token_id) if tok.eos_token_id in t else len(t)
    out.append({{"policy": policy, "seconds": seconds, "steps": steps, "tokens": tokens}})
print("RESULT " + json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"our engine failed:\n{(res.stdout + res.stderr)[-3000:]}")
    ours = json.loads(line[7:])
    answer_tokens = next(r["tokens"] for r in ours if r["policy"] == "none")
    rows[0]["tokens_per_s"] = answer_tokens / rows[0]["seconds"]
    for r in ours:
        rows.append({"engine": "vllm-elastic", "policy": r["policy"],
                     "step_ms": 1000 * r["seconds"] / r["steps"], "seconds": r["seconds"],
                     "tokens_per_s": r["tokens"] / r["seconds"], "steps": r["steps"]})
    base = rows[0]["tokens_per_s"]
    body = ["| engine | policy | ms per step | seconds | answer tokens/s | vs llama.cpp |",
            "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        body.append(f"| {r['engine']} | {r['policy']} | {r['step_ms']:.1f} | {r['seconds']:.2f} "
                    f"| {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base:.2f}x |")
    body += ["", "llama.cpp runs all steps of the block schedule; ours stops when the answer's "
             "EOS is final (its ms per step is total time / steps actually run). Tokens/s counts "
             "the answer tokens our full-recompute run returns, for both engines."]
    with open(args.out + ".json", "w") as f:
        json.dump({"threads": args.threads, "rows": rows}, f, indent=1)
    write_report(args.out + ".md", "vllm-elastic beside llama.cpp's diffusion example",
                 f"`{args.model}`, {args.n} held-out chat prompts ({args.task}), gen "
                 f"{args.gen_length}, blocks of {args.block_length}, {steps} steps, greedy, "
                 f"fp32 (GGUF f32).", body,
                 threads=f"{args.threads} thread(s) for each engine's model")


if __name__ == "__main__":
    main()
