"""Where a cache policy's accuracy goes: its stale K/V removed one token group at a time.

    python benchmarks/staleness.py --model examples/models/llada-long-arith --n 100 \
        --gen-length 512 --threads 2 --check benchmarks/results/policies_long.requests.jsonl \
        --out benchmarks/results/staleness_long
    python benchmarks/staleness.py --policy dual --variants policy none --n 100 \
        --gen-length 512 --threads 2 --check benchmarks/results/policies_long.requests.jsonl \
        --out benchmarks/results/staleness_long_dual

Plain PyTorch (the reference model, no vLLM). Each held-out prompt is decoded under the cache
table's schedule (window 16, threshold 0.9, greedy) by a simulation of the engine running a
cache policy (`--policy`, default elastic): the policy object itself (vllm_elastic.cache)
picks each step's query rows (for elastic: tracked + just committed + window, every position
at step 0; for dual: the window-aligned chunk stretched to the window's end + just committed,
every position when the chunk changes), decides refreshes and tracks the most-attended tokens, while a per-layer
cache of every position's layer input, Q, K and V plays the part of the paged KV memory: at
each layer the K/V rows of positions not in the step's query set are the cached ones. A query
row's output depends only on its own residual path and on the K/V it attends to, so the query
rows' logits are the engine's (`--check` compares the answers with a cache table's request
log; tests/test_staleness_script.py compares them with the engine for every policy).

The variants add a token group to every step's query set, so that group's K/V are never stale:

  policy             the policy as the engine runs it (reported under the policy's name)
  +masks             and every still-masked position (off-window MASKs fresh)
  +near-masks        and the masked positions up to NEAR (32) past the window's end
  +decoded           and every committed answer token
  +prompt            and every prompt token
  +masks+decoded     both
  none               every position (full recompute)

Writes OUT.md and OUT.json: accuracy, answers equal to none's, steps per request, per variant.
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

NEAR = 32  # +near-masks: how far past the window's end masked positions are kept fresh
VARIANTS = {"policy": (), "+masks": ("masks",), "+near-masks": ("near-masks",),
            "+decoded": ("decoded",),
            "+prompt": ("prompt",), "+masks+decoded": ("masks", "decoded"),
            "none": ("masks", "decoded", "prompt")}


class SimulatedPages:
    """Per layer and position: the layer input, Q, K and V as the engine's pages hold them."""

    def __init__(self, num_layers: int, length: int, d_model: int, heads: int, head_dim: int):
        def z(*shape):
            return [torch.zeros(*shape) for _ in range(num_layers)]
        self.x = z(length, d_model)
        self.q, self.k, self.v = (z(heads, length, head_dim) for _ in range(3))


def _probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention weights [heads, n, L] of q [heads, n, D] over k [heads, L, D]."""
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)


@torch.no_grad()
def simulated_step(model, canvas, policy, pages: SimulatedPages, extra: tuple[str, ...]
                   ) -> torch.Tensor:
    """One decoding step of `policy` over simulated pages -> logits of the window."""
    from vllm_elastic.kernels.statistics import head_axis_similarity
    from vllm_elastic.cache.base import LayerStats
    from vllm_elastic.oracles.llada import rope_cos_sin

    cfg, t = model.config, model.model.transformer
    n, p_len = canvas.length, canvas.prompt_len
    query = torch.zeros(n, dtype=torch.bool)
    query[policy.begin_step(canvas)] = True
    pos = torch.arange(n)
    masked = canvas.tokens == canvas.mask_id
    end = int(canvas.commit_positions().max())
    groups = {"masks": masked, "near-masks": masked & (pos > end) & (pos <= end + NEAR),
              "decoded": (pos >= p_len) & ~masked, "prompt": pos < p_len}
    for g in extra:
        query |= groups[g]
    cos, sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta)
    x = t["wte"](canvas.tokens[None])
    rows = query
    for layer, block in enumerate(t["blocks"]):
        plan = policy.layer_plan(layer)
        if plan.widen:  # positions not computed so far enter from their cached inputs
            x[0, ~query] = pages.x[layer][~query]
            rows = torch.ones(n, dtype=torch.bool)  # this layer and every later one
        pages.x[layer][rows] = x[0, rows]
        q, k, v = (a[0] for a in block.qkv(x, cos, sin))
        probe = plan.probe
        tracked = probe.tracked if probe is not None else torch.empty(0, dtype=torch.long)
        before = _probs(pages.q[layer][:, tracked], pages.k[layer]) if tracked.numel() else None
        for cache, fresh in ((pages.q, q), (pages.k, k), (pages.v, v)):
            cache[layer][:, rows] = fresh[:, rows]
        probs = _probs(q, pages.k[layer])
        x = block.after_attention(x, (probs @ pages.v[layer])[None])
        if probe is None:
            continue
        similarity = None
        if before is not None:
            after = _probs(pages.q[layer][:, tracked], pages.k[layer])
            similarity = head_axis_similarity(after, before, probe.min_weight,
                                              reduce=lambda s: s)
        mass = _probs(pages.q[layer][:, probe.window], pages.k[layer]).sum(dim=(0, 1))
        restart = policy.observe(layer, LayerStats(similarity, mass))
        if restart is not None:
            raise SystemExit("refresh_layers other than 'after' is not simulated")
    head = t["wte"].weight if cfg.weight_tying else t["ff_out"].weight
    return F.linear(t["ln_f"](x[0, canvas.logit_rows()]), head)


def decode(model, prompt_ids: list[int], params, extra: tuple[str, ...]) -> tuple[list[int], int]:
    """(answer tokens up to the first EOS, steps) for one prompt."""
    from vllm_elastic.cache import make_policy
    from vllm_elastic.decoding.canvas import Canvas
    from vllm_elastic.oracles.llada import cut_at_eos

    cfg = model.config
    canvas = Canvas(prompt_ids, params, cfg.mask_token_id, cfg.eos_token_id)
    policy = make_policy(params, cfg.n_layers)
    pages = SimulatedPages(cfg.n_layers, canvas.length, cfg.d_model, cfg.n_heads, cfg.head_dim)
    while not canvas.finished:
        canvas.step(simulated_step(model, canvas, policy, pages, extra))
        policy.end_step(canvas)
    answer = canvas.tokens[canvas.prompt_len:].tolist()
    return cut_at_eos(answer, cfg.eos_token_id), canvas.num_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-long-arith")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--gen-length", type=int, default=512)
    ap.add_argument("--policy", default="elastic", choices=["elastic", "dual", "prefix"])
    ap.add_argument("--gamma", type=float, default=0.9, help="elastic only")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", help="a bench_policies request log: count the `policy` and "
                                    "`none` answers equal to its elastic/GAMMA (or window/POLICY)"
                                    " and window/none rows'")
    ap.add_argument("--out", default="benchmarks/results/staleness_long")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    from vllm_elastic.params import DiffusionParams
    from vllm_elastic.oracles.llada import ReferenceLLaDA, cut_at_eos
    from vllm_elastic.tools.training.data import chat_prompt_ids, extract_answer
    from vllm_elastic.tools.training.batches import task_data

    model = ReferenceLLaDA.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    problems = task_data("long").test_problem_list(args.n)
    elastic = dict(gamma=args.gamma) if args.policy == "elastic" else {}
    params = DiffusionParams(gen_length=args.gen_length, schedule="window", window_length=16,
                             threshold=0.9, cache_policy=args.policy, **elastic)
    params.validate()
    eos = model.config.eos_token_id
    answers, rows = {}, []
    for name in args.variants:
        start, steps, correct = time.perf_counter(), 0, 0
        answers[name] = []
        for p in problems:
            ids, s = decode(model, chat_prompt_ids(tokenizer, p.question), params,
                            VARIANTS[name])
            answers[name].append(ids)
            steps += s
            text = tokenizer.decode(ids, skip_special_tokens=True)
            correct += extract_answer(text) == p.answer
        rows.append({"variant": name, "n": len(problems), "accuracy": correct / len(problems),
                     "steps_per_request": steps / len(problems),
                     "seconds": time.perf_counter() - start})
        print(f"{name}: {correct}/{len(problems)}", file=sys.stderr, flush=True)
    for r in rows:
        if "none" in answers:
            same = [a == b for a, b in zip(answers[r["variant"]], answers["none"])]
            r["same_answer_as_none"] = sum(same) / len(same)
        if r["variant"] == "policy":
            r["variant"] = args.policy
    as_run = f"elastic/{args.gamma}" if args.policy == "elastic" else f"window/{args.policy}"
    check = ""
    if args.check:
        with open(args.check) as f:
            log = [json.loads(line) for line in f][1:]
        for name, row in (("policy", as_run), ("none", "window/none")):
            want = {r["index"]: cut_at_eos(r["token_ids"], eos) for r in log
                    if r["config"] == row and r["gen_length"] == args.gen_length}
            if name in answers and want:
                equal = sum(want.get(i) == a for i, a in enumerate(answers[name]))
                label = args.policy if name == "policy" else name
                check += (f" `{label}` against the engine's {row} row (`{args.check}`): "
                          f"{equal} of {len(answers[name])} answers token for token equal.")
    head = ("| variant | accuracy | same answer as none | steps/request |\n|---|---|---|---|")
    lines = [head] + [f"| {r['variant']} | {r['accuracy']:.1%} | "
                      f"{r.get('same_answer_as_none', float('nan')):.0%} | "
                      f"{r['steps_per_request']:.1f} |" for r in rows]
    policy = ("Elastic-Cache" if args.policy == "elastic" else f"the `{args.policy}` cache")
    setting = (f"gamma {args.gamma} (authors' statistic)" if args.policy == "elastic"
               else f"cache policy {args.policy}")
    write_report(args.out + ".md", f"Which stale K/V cost {policy} accuracy on `{args.model}`",
                 f"{len(problems)} held-out problems (long task), gen {args.gen_length}, window "
                 f"16, threshold 0.9, {setting}, greedy, fp32, "
                 f"{args.threads} torch thread(s).{check}", lines)
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
