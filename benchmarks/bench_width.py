"""Does skipping tokens still save time at real width? Kernel time per token-layer, full pass
versus query-set pass, on a random-init LLaDA-shaped layer (plain PyTorch, no vLLM).

    python benchmarks/bench_width.py --d-model 2048 --heads 16 --mlp 5504 \
        --canvas 256 512 --query 24 --out benchmarks/results/width

A full pass runs every canvas token through one layer (what `none` does at every step and
what Elastic-Cache does in a refreshed layer); a query pass runs only the query set (tracked
+ just committed + window, ~24 tokens at window 16) with attention over all cached K/V (what
a reuse layer does). Random weights: this times kernels only and says nothing about
Elastic-Cache's accuracy or how often it refreshes. Writes OUT.md.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from report import write_report


def layer_weights(d: int, heads: int, mlp: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = lambda *shape: torch.randn(*shape, generator=g) / shape[-1] ** 0.5  # noqa: E731
    return {"qkv": w(3 * d, d), "o": w(d, d), "gate_up": w(2 * mlp, d), "down": w(d, mlp)}


def pass_time(w, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, heads: int,
              repeats: int) -> float:
    """Seconds for one layer over query rows x [n, d] attending to keys/values [L, d]."""
    n, d = x.shape
    hd = d // heads

    def run():
        q, k, v = F.linear(x, w["qkv"]).split(d, dim=-1)
        keys[-n:], values[-n:] = k, v  # the query rows' fresh K/V go into the cache
        qh = q.view(n, heads, hd).transpose(0, 1)
        kh = keys.view(-1, heads, hd).transpose(0, 1)
        vh = values.view(-1, heads, hd).transpose(0, 1)
        att = F.scaled_dot_product_attention(qh, kh, vh).transpose(0, 1).reshape(n, d)
        h = x + F.linear(att, w["o"])
        gate, up = F.linear(h, w["gate_up"]).chunk(2, dim=-1)
        return h + F.linear(F.silu(gate) * up, w["down"])

    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--mlp", type=int, default=5504)
    ap.add_argument("--canvas", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--query", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/width")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = layer_weights(args.d_model, args.heads, args.mlp)
    lines = ["| canvas L | full pass (s) | query pass, n tokens (s) | full per token-layer (ms) "
             "| query per token-layer (ms) | query pass / full pass | n / L |", "|" + "---|" * 7]
    for length in args.canvas:
        keys, values = torch.randn(length, args.d_model), torch.randn(length, args.d_model)
        full = pass_time(w, torch.randn(length, args.d_model), keys, values, args.heads,
                         args.repeats)
        part = pass_time(w, torch.randn(args.query, args.d_model), keys, values, args.heads,
                         args.repeats)
        lines.append(f"| {length} | {full:.3f} | {part:.3f} (n={args.query}) | "
                     f"{1e3 * full / length:.2f} | {1e3 * part / args.query:.2f} | "
                     f"{part / full:.3f} | {args.query / length:.3f} |")
    write_report(args.out + ".md",
                 f"Kernel time per token-layer at width {args.d_model} (random weights)",
                 f"fp32; one LLaDA layer ({args.heads} heads, MLP {args.mlp}); times only "
                 f"kernels, no elastic speedup or accuracy (random weights).", lines,
                 threads=f"{args.threads} torch thread(s)")


if __name__ == "__main__":
    main()
