"""Held-out exact-match accuracy of a shipped checkpoint with the oracle's `generate` (greedy).

    python -m vllm_elastic.tools.training.evaluate examples/models/llada-tiny-arith --n 100 \
        --gen-length 64 256 --block-length 32
    python -m vllm_elastic.tools.training.evaluate examples/models/llada-long-arith --task long \
        --n 50 --gen-length 512 --schedule window

Full-recompute LLaDA decoding, one token per step (steps = gen_length), low-confidence
remasking, temperature 0; or (--schedule window) Elastic-Cache's window of 32 with threshold
0.9, still full recompute. Prints one JSON line per gen_length (and appends it to --out-jsonl).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from vllm_elastic.oracles.llada import ReferenceLLaDA  # noqa: E402
from vllm_elastic.tools.training.evaluation import evaluate  # noqa: E402
from vllm_elastic.tools.training.model_setup import load_tokenizer  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--gen-length", type=int, nargs="+", default=[64])
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--task", choices=("arith", "long"), default="arith")
    ap.add_argument("--schedule", choices=("blocks", "window"), default="blocks")
    ap.add_argument("--out-jsonl", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = ReferenceLLaDA.from_pretrained(a.model)
    tokenizer = load_tokenizer(a.model)
    for g in a.gen_length:
        t0 = time.time()
        res = evaluate(model, tokenizer, a.n, g, a.block_length, task=a.task,
                       schedule=a.schedule)
        res["seconds"] = round(time.time() - t0, 1)
        res["model"] = a.model
        line = json.dumps(res)
        print(line, flush=True)
        if a.out_jsonl:
            with open(a.out_jsonl, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
