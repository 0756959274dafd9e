"""One layer's bidirectional attention for a whole step's batch, three ways, on CPU.

    python benchmarks/bench_attention.py --threads 1

* `loop`: what the engine did before: per request, gather its canvas's K/V rows out of the
  pages by slot and call SDPA;
* `padded`: gather every request's K/V into one zero-padded [R, L_max] batch and call SDPA
  once, with a key-padding mask (queries padded too);
* `engine`: what the engine runs (`varlen.torch_varlen_attention`): one gather of the step's
  K/V rows per group of similar requests, one batched softmax(QK^T)V with padded keys masked;
* `paged`: vLLM's own CPU paged-attention kernel (`cpu_attention_with_kv_cache`,
  causal=False), one call for all requests: queries are any subset of each canvas (by
  query_start_loc), keys come straight from the pages through the block table, no gather.

Shapes: the long-answer model's attention (8 heads x 32) and LLaDA-8B's (32 x 128), canvases
of prompt 80 + gen 512 tokens, R requests, and two query sets per request: the whole canvas
(full recompute, a refresh) and 40 rows (a window of 32 plus tracked and committed tokens:
a cached step). Writes benchmarks/results/attention.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import write_report  # noqa: E402

BLOCK = 128


def make_case(reqs: int, canvas: int, queries: int, heads: int, dim: int, dtype, isa: str):
    from vllm import _custom_ops as ops

    g = torch.Generator().manual_seed(0)
    blocks_per = -(-canvas // BLOCK)
    num_blocks = reqs * blocks_per + 1
    block_table = torch.randperm(num_blocks - 1, generator=g)[: reqs * blocks_per]
    block_table = block_table.view(reqs, blocks_per).to(torch.int32)
    k = torch.randn(reqs * canvas, heads * dim, generator=g).to(dtype)
    v = torch.randn(reqs * canvas, heads * dim, generator=g).to(dtype)
    pos = torch.arange(canvas)
    slots = torch.cat([block_table[r].long()[pos // BLOCK] * BLOCK + pos % BLOCK
                       for r in range(reqs)])
    # Plain pages ([slot, K | V]) as the torch paths read them.
    rows = torch.zeros(num_blocks * BLOCK, 2 * heads * dim, dtype=dtype)
    rows[slots, : heads * dim], rows[slots, heads * dim:] = k, v
    # vLLM's CPU pages (ISA-specific K layout), written by vLLM's own op.
    kv = torch.zeros(num_blocks, heads, BLOCK, 2 * dim, dtype=dtype)
    key_cache, value_cache = kv.view(num_blocks, heads, 2 * BLOCK, dim).chunk(2, dim=2)
    ops.cpu_attn_reshape_and_cache(k.view(-1, heads, dim), v.view(-1, heads, dim), key_cache,
                                   value_cache, slots, isa)
    qpos = torch.arange(canvas) if queries >= canvas else torch.linspace(
        0, canvas - 1, queries).long()
    q = torch.randn(reqs * qpos.numel(), heads * dim, generator=g).to(dtype)
    req_slots = slots.view(reqs, canvas)
    return dict(rows=rows, key_cache=key_cache, value_cache=value_cache, q=q, qpos=qpos,
                req_slots=req_slots, block_table=block_table, heads=heads, dim=dim,
                canvas=canvas, reqs=reqs, isa=isa, dtype=dtype)


def run_loop(c) -> torch.Tensor:
    h, d, n = c["heads"], c["dim"], c["qpos"].numel()
    out = torch.empty_like(c["q"])
    for r in range(c["reqs"]):
        kv = c["rows"][c["req_slots"][r]]
        keys = kv[:, : h * d].view(-1, h, d).transpose(0, 1)
        values = kv[:, h * d:].view(-1, h, d).transpose(0, 1)
        q = c["q"][r * n:(r + 1) * n].view(n, h, d).transpose(0, 1)
        out[r * n:(r + 1) * n] = F.scaled_dot_product_attention(q, keys, values).transpose(
            0, 1).reshape(n, -1)
    return out


def run_padded(c) -> torch.Tensor:
    # Equal canvases here, so padding costs nothing but the mask: the best case for this path.
    h, d, n, R = c["heads"], c["dim"], c["qpos"].numel(), c["reqs"]
    kv = c["rows"][c["req_slots"].reshape(-1)].view(R, c["canvas"], -1)
    keys = kv[..., : h * d].view(R, -1, h, d).transpose(1, 2)
    values = kv[..., h * d:].view(R, -1, h, d).transpose(1, 2)
    q = c["q"].view(R, n, h, d).transpose(1, 2)
    valid = torch.ones(R, 1, 1, c["canvas"], dtype=torch.bool)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=valid)
    return out.transpose(1, 2).reshape(R * n, -1)


def engine_layout(c):
    from vllm_elastic.kernels.page_layout import PageLayout
    from vllm_elastic.kernels.varlen import build_layout

    n = c["qpos"].numel()
    page = PageLayout("kv", c["heads"], c["heads"], c["dim"], 0)
    layout = build_layout([n] * c["reqs"], list(c["req_slots"]), BLOCK, c["heads"])
    return page, layout


def run_engine(c, page, layout) -> torch.Tensor:
    from vllm_elastic.kernels.varlen import torch_varlen_attention

    return torch_varlen_attention(c["q"], c["rows"], layout, page)


def run_paged(c, meta) -> torch.Tensor:
    from vllm import _custom_ops as ops

    h, d = c["heads"], c["dim"]
    out = torch.empty(c["q"].shape[0], h, d, dtype=c["dtype"])
    ops.cpu_attention_with_kv_cache(
        query=c["q"].view(-1, h, d), key_cache=c["key_cache"], value_cache=c["value_cache"],
        output=out, query_start_loc=meta["qsl"], seq_lens=meta["seq_lens"], scale=d ** -0.5,
        causal=False, alibi_slopes=None, sliding_window=-1, block_table=c["block_table"],
        softcap=0.0, scheduler_metadata=meta["sched"], s_aux=None)
    return out.view(c["q"].shape[0], -1)


def paged_metadata(c) -> dict:
    from vllm import _custom_ops as ops

    n = c["qpos"].numel()
    qsl = torch.arange(c["reqs"] + 1, dtype=torch.int32) * n
    seq_lens = torch.full((c["reqs"],), c["canvas"], dtype=torch.int32)
    sched = ops.cpu_attn_get_scheduler_metadata(
        num_reqs=c["reqs"], num_heads=c["heads"], num_kv_heads=c["heads"], head_dim=c["dim"],
        seq_lens=seq_lens, dtype=c["dtype"], query_start_loc=qsl, causal=False,
        sliding_window_size=-1, isa=c["isa"], enable_kv_split=False)
    return dict(qsl=qsl, seq_lens=seq_lens, sched=sched)


def timeit(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/attention")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    rows = []
    shapes = [("long-answer model", 8, 32, torch.float32), ("LLaDA-8B width", 32, 128,
                                                             torch.bfloat16)]
    for label, heads, dim, dtype in shapes:
        isa = _get_attn_isa(dtype, BLOCK, dim)
        for reqs in (1, 16):
            for queries in (592, 40):
                if label.startswith("LLaDA") and reqs == 16 and queries == 592:
                    continue  # minutes per call on one thread; the trend is clear without it
                c = make_case(reqs, 592, queries, heads, dim, dtype, isa)
                meta = paged_metadata(c)
                page, layout = engine_layout(c)
                ref = run_loop(c).float()
                err = {"padded": (run_padded(c).float() - ref).abs().max().item(),
                       "engine": (run_engine(c, page, layout).float() - ref).abs().max().item(),
                       "paged": (run_paged(c, meta).float() - ref).abs().max().item()}
                t = {"loop": timeit(lambda: run_loop(c), a.repeat),
                     "padded": timeit(lambda: run_padded(c), a.repeat),
                     "engine": timeit(lambda: run_engine(c, page, layout), a.repeat),
                     "paged": timeit(lambda: run_paged(c, meta), a.repeat)}
                rows.append({"shape": label, "heads": heads, "head_dim": dim,
                             "dtype": str(dtype).replace("torch.", ""), "requests": reqs,
                             "canvas": 592, "queries_per_request": queries, "isa": isa,
                             **{f"{k}_ms": round(v * 1e3, 3) for k, v in t.items()},
                             "paged_speedup_vs_loop": round(t["loop"] / t["paged"], 2),
                             "engine_speedup_vs_loop": round(t["loop"] / t["engine"], 2),
                             "max_abs_err_engine": err["engine"],
                             "max_abs_err_padded": err["padded"],
                             "max_abs_err_paged": err["paged"]})
                print(rows[-1], flush=True)
    with open(a.out + ".json", "w") as f:
        json.dump({"threads": a.threads, "rows": rows}, f, indent=1)
    body = ["| shape | dtype | requests | queries/request | loop ms | padded SDPA ms | "
            "engine ms | vLLM paged ms | engine vs loop | paged vs loop | max err engine |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        body.append(f"| {r['shape']} ({r['heads']}x{r['head_dim']}) | {r['dtype']} | "
                    f"{r['requests']} | {r['queries_per_request']} | {r['loop_ms']} | "
                    f"{r['padded_ms']} | {r['engine_ms']} | {r['paged_ms']} | "
                    f"{r['engine_speedup_vs_loop']}x | {r['paged_speedup_vs_loop']}x | "
                    f"{r['max_abs_err_engine']:.1e} |")
    write_report(a.out + ".md", "One layer's attention for a step's batch: loop vs padded vs "
                 "vLLM's paged CPU kernel",
                 f"torch {torch.__version__}, {a.threads} thread(s), canvas 592 (prompt 80 + gen "
                 f"512), block size {BLOCK}, best of {a.repeat}. Times are one layer's "
                 "attention only (gather included for loop/padded).", body,
                 threads=f"{a.threads} thread(s)")


if __name__ == "__main__":
    main()
