"""High-throughput offline batch generation with vllm.LLM and a diffusion LM.

    python examples/offline_batch.py INPUT OUTPUT.jsonl [--model DIR] [--chunk 64] ...

INPUT is JSONL (one object per line) or plain text (one prompt per line). A JSONL object has
"prompt" (text, completion-style) or "messages" (chat, rendered with the model's chat template),
and may carry "id", "max_tokens", "temperature", "seed" and any diffusion parameter
("gen_length", "block_length", "steps", "schedule", "cache_policy", ...: the README's table)
that overrides the flags of the same name.

OUTPUT gets one JSON object per input line, in input order: {"line", "id", "text",
"token_ids", "finish_reason"}, or {"line", "id", "error"} for a line that could not be run
(malformed JSON, bad parameters); the other lines are still processed. Results are appended
chunk by chunk, so an interrupted run resumes where it stopped: lines already in OUTPUT are
not generated again (--overwrite starts over). When all lines are done the file is rewritten
sorted by input line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Every per-request diffusion parameter, with the type its command-line flag parses.
DIFFUSION_FLAGS = {"gen_length": int, "block_length": int, "steps": int, "remasking": str,
                   "threshold": float, "schedule": str, "window_length": int,
                   "tokens_per_iter": int, "cache_policy": str, "gamma": float, "track_num": int,
                   "refresh_interval": int, "refresh_layers": str, "drift_min_weight": float,
                   "guard_bound": float, "guard_sentinels": int, "refresh_band": int,
                   "alg": str, "alg_temp": float, "eps": float}
SWITCHES = ("full_update", "guard")  # true when given, else left to the server's default
DIFFUSION_KEYS = tuple(DIFFUSION_FLAGS) + SWITCHES
DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "models", "llada-tiny-arith")


def read_requests(path: str) -> list[dict]:
    """One dict per non-empty input line: {"line", "id", "request"} or {"line", "id", "error"}."""
    items = []
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            raw = raw.strip()
            if not raw:
                continue
            if not path.endswith(".jsonl"):
                items.append({"line": n, "id": n, "request": {"prompt": raw}})
                continue
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict) or not ("prompt" in obj or "messages" in obj):
                    raise ValueError('expected an object with "prompt" or "messages"')
            except ValueError as e:
                items.append({"line": n, "id": n, "error": f"line {n}: malformed input: {e}"})
                continue
            items.append({"line": n, "id": obj.get("id", n), "request": obj})
    return items


def done_lines(path: str) -> set[int]:
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {json.loads(line)["line"] for line in f if line.strip()}


def sampling_params(request: dict, args):
    from vllm import SamplingParams

    extra = {k: getattr(args, k) for k in DIFFUSION_KEYS if getattr(args, k) is not None}
    extra.update({k: request[k] for k in DIFFUSION_KEYS if k in request})
    return SamplingParams(temperature=request.get("temperature", args.temperature),
                          seed=request.get("seed", args.seed),
                          max_tokens=request.get("max_tokens"), extra_args=extra)


def prompt_ids(request: dict, tokenizer, chat: bool) -> list[int]:
    if "messages" in request or chat:
        messages = request.get("messages") or [{"role": "user", "content": request["prompt"]}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             return_dict=False)
    return tokenizer(request["prompt"])["input_ids"]


def run_chunk(llm, tokenizer, chunk: list[dict], args) -> list[dict]:
    """Generate one chunk. Each request is checked first (the same checks the server answers
    with HTTP 400), so a bad line is reported alone and the rest of the chunk still runs."""
    from vllm_elastic.integration.validation import check_request

    results, prompts, params, owners = [], [], [], []
    for item in chunk:
        try:
            sp = sampling_params(item["request"], args)
            ids = prompt_ids(item["request"], tokenizer, args.chat)
            check_request(len(ids), sp, llm.llm_engine.vllm_config)
        except Exception as e:  # bad parameters, prompt too long, template errors
            results.append({"line": item["line"], "id": item["id"],
                            "error": f"line {item['line']}: {e}"})
            continue
        prompts.append({"prompt_token_ids": ids})
        params.append(sp)
        owners.append(item)
    outputs = llm.generate(prompts, params, use_tqdm=False) if prompts else []
    for item, out in zip(owners, outputs):
        o = out.outputs[0]
        results.append({"line": item["line"], "id": item["id"], "text": o.text,
                        "token_ids": list(o.token_ids), "finish_reason": o.finish_reason})
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--chunk", type=int, default=64, help="prompts per vllm.LLM.generate call")
    ap.add_argument("--chat", action="store_true", help="wrap plain prompts as chat messages")
    ap.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    for key, kind in DIFFUSION_FLAGS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None)
    for key in SWITCHES:
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, action="store_const",
                        const=True, default=None)
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    return ap.parse_args(argv)


def process(args: argparse.Namespace, llm=None) -> list[dict]:
    """Run every pending input line (building the LLM only if there is work); returns the rows
    of the finished output file."""
    from tqdm import tqdm

    if args.overwrite and os.path.exists(args.output):
        os.remove(args.output)
    items = read_requests(args.input)
    finished = done_lines(args.output)
    todo = [it for it in items if it["line"] not in finished]
    print(f"{len(items)} prompts, {len(items) - len(todo)} already done, {len(todo)} to run",
          file=sys.stderr)
    if todo:
        if llm is None:
            from vllm import LLM

            llm = LLM(model=args.model, dtype="float32", max_model_len=args.max_model_len,
                      tensor_parallel_size=args.tensor_parallel_size)
        tokenizer = llm.get_tokenizer()
        with open(args.output, "a") as out, tqdm(total=len(todo), desc="generating") as bar:
            for start in range(0, len(todo), args.chunk):
                chunk = todo[start: start + args.chunk]
                errors = [{"line": it["line"], "id": it["id"], "error": it["error"]}
                          for it in chunk if "error" in it]
                runnable = [it for it in chunk if "error" not in it]
                for result in errors + run_chunk(llm, tokenizer, runnable, args):
                    out.write(json.dumps(result) + "\n")
                out.flush()
                bar.update(len(chunk))
    with open(args.output) as f:
        rows = sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["line"])
    with open(args.output, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"error: {r['error']}", file=sys.stderr)
    print(f"wrote {len(rows)} results to {args.output} ({len(failed)} errors)", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> None:
    process(parse_args(argv))


if __name__ == "__main__":
    main()
