"""Does skipping tokens still save time at real width? Kernel time per token-layer, full pass
versus query-set pass, on a random-init LLaDA-shaped layer (plain PyTorch, no vLLM).

    python benchmarks/bench_width.py --d-model 2048 --heads 16 --mlp 5504 \
        --canvas 256 512 --query 24 --out benchmarks/results/width

A full pass runs every canvas token through one layer (what `none` does at every step and
what Elastic-Cache does in a refreshed layer); a query pass runs only the query set (tracked
+ just committed + window, ~24 tokens at window 16) with attention over all cached K/V (what
a reuse layer does). `--batch B` runs B requests of equal canvas together (the engine's
batched step). The statistics column times what a reuse layer adds for Elastic-Cache: the
window rows' attention weights summed for the most-attended pick and the drift test's old
and new attention rows of the tracked tokens, cosine along the head axis (the authors'
statistic). Random weights: this times kernels only and says nothing about Elastic-Cache's
accuracy or how often it refreshes. Runs on CPU (the default) or, with `--device cuda`, on a
GPU with plain PyTorch (no vLLM needed), eager or replayed from CUDA graphs
(`--cuda-graphs`). Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch
import torch.nn.functional as F
from report import write_report

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def layer_weights(d: int, heads: int, mlp: int, device: str,
                  dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = lambda *shape: torch.randn(*shape, generator=g) / shape[-1] ** 0.5  # noqa: E731
    shapes = {"qkv": (3 * d, d), "o": (d, d), "gate_up": (2 * mlp, d), "down": (d, mlp)}
    return {name: w(*shape).to(device, dtype) for name, shape in shapes.items()}


def timed(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Mean seconds per call after one warm-up call (synchronising the GPU around the loop)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def layer_pass(w, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               heads: int) -> Callable[[], torch.Tensor]:
    """One layer over query rows x [B, n, d] attending to cached keys/values [B, heads, L, hd]
    (cached head-major, the layout attention and the statistics' matmuls read fastest)."""
    b, n, d = x.shape
    hd = d // heads

    def run() -> torch.Tensor:
        q, k, v = (t.view(b, n, heads, hd).transpose(1, 2)
                   for t in F.linear(x, w["qkv"]).split(d, dim=-1))
        keys[:, :, -n:], values[:, :, -n:] = k, v  # the query rows' fresh K/V go into the cache
        att = F.scaled_dot_product_attention(q, keys, values).transpose(1, 2).reshape(b, n, d)
        h = x + F.linear(att, w["o"])
        gate, up = F.linear(h, w["gate_up"]).chunk(2, dim=-1)
        return h + F.linear(F.silu(gate) * up, w["down"])

    return run


def statistics(q: torch.Tensor, keys: torch.Tensor, old_q: torch.Tensor, old_keys: torch.Tensor,
               heads: int, window: int, tracked: int) -> Callable[[], torch.Tensor]:
    """Elastic-Cache's per-layer statistics for B requests: most-attended pick and drift test.
    q, old_q: [B, n, d] query rows; keys, old_keys: [B, heads, L, hd]."""
    b, n, d = q.shape
    hd = d // heads
    split = lambda t: t.reshape(b, -1, heads, hd).transpose(1, 2)  # noqa: E731
    scale = hd ** -0.5

    def run() -> torch.Tensor:
        win = split(q[:, -window:])
        weights = torch.softmax((win @ keys.transpose(-1, -2)).float() * scale, dim=-1)
        top = weights.sum(dim=(1, 2)).topk(1, dim=-1).indices
        rows = slice(0, tracked)
        new = torch.softmax(split(q[:, rows]) @ keys.transpose(-1, -2) * scale, dim=-1)
        old = torch.softmax(split(old_q[:, rows]) @ old_keys.transpose(-1, -2) * scale, dim=-1)
        drift = F.cosine_similarity(new, old, dim=1).mean(dim=(1, 2))  # along the head axis
        return torch.cat([top.to(drift.dtype).view(-1), drift])

    return run


def graphed(fn: Callable[[], object]) -> Callable[[], object]:
    """fn captured once in a CUDA graph: replays without per-kernel launch cost."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside the graph, as capture requires
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def measure(args: argparse.Namespace, w, length: int, batch: int) -> dict:
    dev, dt, d = args.device, DTYPES[args.dtype], args.d_model
    wrap = graphed if args.cuda_graphs else (lambda fn: fn)
    rand = lambda *shape: torch.randn(*shape, device=dev, dtype=dt)  # noqa: E731
    cache = (batch, args.heads, length, d // args.heads)
    keys, values = rand(*cache), rand(*cache)
    full = timed(wrap(layer_pass(w, rand(batch, length, d), keys, values, args.heads)),
                 args.repeats, dev)
    part = timed(wrap(layer_pass(w, rand(batch, args.query, d), keys, values, args.heads)),
                 args.repeats, dev)
    stats = timed(wrap(statistics(rand(batch, args.query, d), keys, rand(batch, args.query, d),
                                  rand(*cache), args.heads, args.window,
                                  args.tracked)), args.repeats, dev)
    return {"canvas": length, "batch": batch, "query": args.query, "full_s": full,
            "query_s": part, "statistics_s": stats, "query_over_full": part / full,
            "query_with_statistics_over_full": (part + stats) / full,
            "n_over_L": args.query / length}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--mlp", type=int, default=5504)
    ap.add_argument("--canvas", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--query", type=int, default=24)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--tracked", type=int, default=8,
                    help="tracked tokens in the drift test (the union over layers)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="replay each pass from a CUDA graph (no launch overhead)")
    ap.add_argument("--out", default="benchmarks/results/width")
    args = ap.parse_args()
    if args.cuda_graphs and not args.device.startswith("cuda"):
        ap.error("--cuda-graphs needs --device cuda")
    torch.set_num_threads(args.threads)
    w = layer_weights(args.d_model, args.heads, args.mlp, args.device, DTYPES[args.dtype])
    rows = [measure(args, w, length, batch) for batch in args.batch for length in args.canvas]
    lines = ["| batch | canvas L | full pass (ms) | query pass, n tokens (ms) | statistics (ms) "
             "| query pass / full pass | (query + statistics) / full | n / L |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['canvas']} | {1e3 * r['full_s']:.3f} | "
                     f"{1e3 * r['query_s']:.3f} (n={r['query']}) | {1e3 * r['statistics_s']:.3f} | "
                     f"{r['query_over_full']:.3f} | {r['query_with_statistics_over_full']:.3f} | "
                     f"{r['n_over_L']:.3f} |")
    gpu = (f"{torch.cuda.get_device_name(args.device)}, GPU, torch {torch.__version__}"
           if args.device.startswith("cuda") else None)
    where = gpu or f"{args.threads} torch thread(s)"
    mode = "CUDA graphs" if args.cuda_graphs else "eager PyTorch"
    setup = (f"{args.dtype}; one LLaDA layer (d_model {args.d_model}, {args.heads} heads, MLP "
             f"{args.mlp}), {mode}, SDPA attention; statistics: window {args.window}, "
             f"{args.tracked} tracked tokens; times only kernels, no elastic speedup or accuracy "
             f"(random weights).")
    write_report(args.out + ".md", f"Kernel time per layer at width {args.d_model} "
                 "(random weights)", setup, lines, threads=f"{args.threads} torch thread(s)",
                 accelerator=gpu)
    with open(args.out + ".json", "w") as f:
        json.dump({"setup": setup, "device": where, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
