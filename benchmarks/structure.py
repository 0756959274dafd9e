"""The attention/KV structure Elastic-Cache relies on, measured on a trained model.

    python benchmarks/structure.py --model examples/models/llada-tiny-arith --n 24 \
        --gen-length 128 --out benchmarks/results/structure
    python benchmarks/structure.py --model examples/models/llada-long-arith --task long \
        --n 4 --gen-length 320 --threads 2 --out benchmarks/results/structure_long

Plain PyTorch (the reference model, no vLLM, no cache): every held-out prompt is decoded with
full recompute under Elastic-Cache's window schedule committing one token per step (window
16, top-1, greedy), so consecutive steps differ by exactly one token, as in the paper's
analysis. Each forward is traced per layer (K and V after RoPE, attention weights), and
consecutive steps are compared:

  1. KV drift per layer: 1 - cosine(K_t, K_t-1) per token (V alike), for prompt tokens,
     already-decoded answer tokens and still-masked tokens (the token committed in between is
     left out: its input changed). Does drift grow with depth?
  2. Attention mass versus drift: at each layer, how much of the window's attention a token
     receives at step t-1 against how far its K moves by step t; the most-attended token
     (Elastic-Cache's tracked token) is marked.
  3. Off-window MASK tokens: the share of the window rows' attention that falls on masked
     positions beyond the window, by distance past the window's end.
  4. Elastic-Cache's drift statistic itself: the cosine along the head axis between the
     tracked token's attention rows at t-1 and t, averaged over keys, per layer, as torch's
     cosine_similarity computes it (eps 1e-8 on each norm) and restricted to keys whose
     weight norm over heads is >= 1e-6 in either row (the engine's drift_min_weight). (Under
     full recompute both rows are fresh; inside Elastic-Cache the old row comes from the
     cache.)

Writes OUT.md (tables), OUT_drift.png, OUT_mass_vs_drift.png, OUT_offwindow.png,
OUT_similarity.png.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import write_report  # noqa: E402


@dataclass
class LayerTrace:
    k: torch.Tensor  # [L, H*D] after RoPE (per query head)
    v: torch.Tensor  # [L, H*D]
    probs: torch.Tensor  # [H, L, L] attention weights (query, key)


@torch.no_grad()
def traced_forward(model, ids: torch.Tensor) -> tuple[torch.Tensor, list[LayerTrace]]:
    """The reference forward for one canvas [L], keeping each layer's K, V and weights."""
    from vllm_elastic.oracles.llada import rope_cos_sin

    cfg, t = model.config, model.model.transformer
    n = ids.shape[0]
    cos, sin = rope_cos_sin(torch.arange(n), cfg.head_dim, cfg.rope_theta)
    x, traces = t["wte"](ids[None]), []
    for block in t["blocks"]:
        q, k, v = block.qkv(x, cos, sin)  # K/V per query head (repeated under GQA)
        probs = torch.softmax(q @ k.transpose(-1, -2) * block.head_dim ** -0.5, dim=-1)
        traces.append(LayerTrace(k=k[0].transpose(0, 1).reshape(n, -1),
                                 v=v[0].transpose(0, 1).reshape(n, -1), probs=probs[0]))
        x = block.after_attention(x, probs @ v)
    head = t["wte"].weight if cfg.weight_tying else t["ff_out"].weight
    return F.linear(t["ln_f"](x), head)[0], traces


def row_drift(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per row."""
    return 1 - F.cosine_similarity(new, old, dim=-1)


class Collector:
    def __init__(self, num_layers: int, max_distance: int) -> None:
        self.L = num_layers
        self.drift = {g: [[] for _ in range(num_layers)] for g in ("prompt", "decoded", "masked")}
        self.v_drift = {g: [[] for _ in range(num_layers)] for g in ("prompt", "decoded", "masked")}
        self.mass_drift: list[tuple[int, float, float, bool]] = []  # layer, mass, drift, top
        self.offwindow_share = [[] for _ in range(num_layers)]
        self.by_distance = torch.zeros(num_layers, max_distance)
        self.by_distance_count = torch.zeros(num_layers, max_distance)
        self.sim_torch = [[] for _ in range(num_layers)]
        self.sim_floor = [[] for _ in range(num_layers)]
        self.faint_keys = [[] for _ in range(num_layers)]
        self.tracked_drift_rank = [[] for _ in range(num_layers)]

    def compare(self, prev, cur, tokens_prev, canvas, committed: int, window) -> None:
        """prev/cur: traces at steps t-1 and t; tokens_prev: canvas at t-1 (before commit)."""
        mask_id, p_len = canvas.mask_id, canvas.prompt_len
        n = tokens_prev.shape[0]
        pos = torch.arange(n)
        groups = {"prompt": pos < p_len,
                  "decoded": (pos >= p_len) & (tokens_prev != mask_id),
                  "masked": tokens_prev == mask_id}
        for g in groups.values():
            g[committed] = False
        masked_prev = tokens_prev == mask_id
        for layer in range(self.L):
            a, b = prev[layer], cur[layer]
            kd, vd = row_drift(b.k, a.k), row_drift(b.v, a.v)
            for name, sel in groups.items():
                if sel.any():
                    self.drift[name][layer].append(float(kd[sel].mean()))
                    self.v_drift[name][layer].append(float(vd[sel].mean()))
            # Attention the window's rows paid at t-1, per key, masked keys zeroed (the tracked
            # token's rule); its drift to t.
            mass = a.probs[:, window].sum(dim=(0, 1))
            share = mass / mass.sum()
            cand = ~masked_prev
            cand[committed] = False
            top = int(share.masked_fill(~cand, -1).argmax())
            for i in cand.nonzero()[:, 0].tolist():
                self.mass_drift.append((layer, float(share[i]), float(kd[i]), i == top))
            order = kd[cand].argsort()
            rank = int((order == int(cand[:top].sum())).nonzero()[0]) / max(1, int(cand.sum()) - 1)
            self.tracked_drift_rank[layer].append(rank)
            # Off-window MASK keys: share of the window's attention, by distance past it.
            end = int(window.max())
            off = masked_prev & (pos > end)
            self.offwindow_share[layer].append(float(share[off].sum()))
            dist = (pos - end)[off] - 1
            dist = dist[dist < self.by_distance.shape[1]]
            keys = off.nonzero()[:, 0][: dist.numel()]
            self.by_distance[layer].index_add_(0, dist, share[keys])
            self.by_distance_count[layer].index_add_(0, dist, torch.ones(dist.numel()))
            # Elastic-Cache's statistic on the tracked token's rows.
            rows_new, rows_old = b.probs[:, [top]], a.probs[:, [top]]
            self.sim_torch[layer].append(self._similarity(rows_new, rows_old, 0.0))
            self.sim_floor[layer].append(self._similarity(rows_new, rows_old, 1e-6))
            # Keys the tracked token attends to with weight norm over heads < 1e-6 in both rows:
            # their head-axis cosine is ~0 (torch's eps), whatever the drift.
            faint = (rows_new.norm(dim=0) < 1e-6) & (rows_old.norm(dim=0) < 1e-6)
            self.faint_keys[layer].append(float(faint.float().mean()))

    @staticmethod
    def _similarity(new: torch.Tensor, old: torch.Tensor, min_weight: float) -> float:
        """The engine's statistic itself (one rank: nothing to sum across)."""
        from vllm_elastic.kernels.attention import head_axis_similarity

        return head_axis_similarity(new, old, min_weight=min_weight, reduce=lambda t: t)


def decode_and_trace(model, prompt_ids, gen_length, collector) -> int:
    from vllm_elastic.decoding.canvas import Canvas
    from vllm_elastic.params import DiffusionParams

    cfg = model.config
    params = DiffusionParams(gen_length=gen_length, schedule="window", window_length=16,
                             threshold=None, tokens_per_iter=1)
    canvas = Canvas(prompt_ids, params, cfg.mask_token_id, cfg.eos_token_id)
    prev = None
    steps = 0
    while not canvas.finished:
        window = canvas.commit_positions()
        logits, traces = traced_forward(model, canvas.tokens)
        if prev is not None:
            collector.compare(prev[0], traces, prev[1], canvas, prev[2], prev[3])
        tokens_before = canvas.tokens.clone()
        canvas.step(logits[window])
        prev = (traces, tokens_before, int(canvas.last_committed[0]), window)
        steps += 1
    return steps


def mean(xs) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def plots(c: Collector, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(range(c.L))
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for name in c.drift:  # drift below 1e-9 is float rounding (layer 0 only moves by it)
        ax[0].plot(layers, [max(mean(x), 1e-9) for x in c.drift[name]], marker="o", label=name)
        ax[1].plot(layers, [max(mean(x), 1e-9) for x in c.v_drift[name]], marker="o",
                   label=name)
    for a, what in zip(ax, ("K", "V")):
        a.set_yscale("log")
        a.set_xlabel("layer")
        a.set_ylabel(f"{what} drift, 1 - cos between consecutive steps")
        a.legend()
    fig.suptitle("KV drift per layer (one token committed per step)")
    fig.tight_layout()
    fig.savefig(out + "_drift.png", dpi=110)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    rest = [(m, d) for _, m, d, top in c.mass_drift if not top]
    tops = [(m, d) for _, m, d, top in c.mass_drift if top]
    ax.scatter([m for m, _ in rest], [max(d, 1e-9) for _, d in rest], s=2, alpha=0.15,
               label="other unmasked tokens")
    ax.scatter([m for m, _ in tops], [max(d, 1e-9) for _, d in tops], s=6, c="red",
               label="most-attended (tracked) token")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("share of the window's attention at step t-1")
    ax.set_ylabel("K drift to step t (1 - cos)")
    ax.legend()
    ax.set_title("Attention mass vs drift (all layers)")
    fig.tight_layout()
    fig.savefig(out + "_mass_vs_drift.png", dpi=110)

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    per_key = c.by_distance / c.by_distance_count.clamp_min(1)
    for layer in layers:
        ax[0].plot(range(1, per_key.shape[1] + 1), per_key[layer].clamp_min(1e-12).tolist(),
                   label=f"layer {layer}")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("distance past the window's end (positions)")
    ax[0].set_ylabel("share of window attention per masked key")
    ax[0].legend(fontsize=7)
    ax[1].bar(layers, [mean(x) for x in c.offwindow_share])
    ax[1].set_xlabel("layer")
    ax[1].set_ylabel("total share on off-window MASK tokens")
    fig.suptitle("Attention of the window on MASK tokens beyond it")
    fig.tight_layout()
    fig.savefig(out + "_offwindow.png", dpi=110)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(layers, [mean(x) for x in c.sim_torch], marker="o",
            label="as computed (torch cosine, eps 1e-8)")
    ax.plot(layers, [mean(x) for x in c.sim_floor], marker="o",
            label="keys with weight norm >= 1e-6 only")
    ax.set_xlabel("layer")
    ax.set_ylabel("head-axis cosine, tracked token's rows t-1 vs t")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("Elastic-Cache's drift statistic per layer")
    fig.tight_layout()
    fig.savefig(out + "_similarity.png", dpi=110)


def table(c: Collector) -> list[str]:
    lines = ["| layer | K drift prompt | K drift decoded | K drift masked | V drift decoded "
             "| tracked token's K-drift rank | off-window MASK share | similarity (torch) "
             "| similarity (keys >= 1e-6) | faint keys | steps < 0.9 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for layer in range(c.L):
        lines.append(
            f"| {layer} | {mean(c.drift['prompt'][layer]):.2e} "
            f"| {mean(c.drift['decoded'][layer]):.2e} | {mean(c.drift['masked'][layer]):.2e} "
            f"| {mean(c.v_drift['decoded'][layer]):.2e} "
            f"| {mean(c.tracked_drift_rank[layer]):.2f} "
            f"| {mean(c.offwindow_share[layer]):.3f} | {mean(c.sim_torch[layer]):.3f} "
            f"| {mean(c.sim_floor[layer]):.3f} | {mean(c.faint_keys[layer]):.3f} "
            f"| {mean([float(x < 0.9) for x in c.sim_torch[layer]]):.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="examples/models/llada-tiny-arith")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--out", default="benchmarks/results/structure")
    ap.add_argument("--task", choices=("arith", "long"), default="arith",
                    help="held-out problems of the tiny task or of the long-answer task")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    from vllm_elastic.oracles.llada import ReferenceLLaDA
    from vllm_elastic.tools.training import long_data
    from vllm_elastic.tools.training.data import chat_prompt_ids, test_problem_list

    torch.manual_seed(0)
    model = ReferenceLLaDA.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    collector = Collector(model.config.n_layers, max_distance=48)
    steps = 0
    problems = (long_data.test_problem_list if args.task == "long" else test_problem_list)
    for problem in problems(args.n):
        steps += decode_and_trace(model, chat_prompt_ids(tokenizer, problem.question),
                                  args.gen_length, collector)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    plots(collector, args.out)
    name = os.path.basename(args.out)
    write_report(
        args.out + ".md", f"Attention and KV structure of `{args.model}`",
        f"{args.n} held-out problems, gen {args.gen_length}, window schedule committing one "
        f"token per step (greedy, full recompute, fp32), {steps} steps traced, "
        f"{torch.get_num_threads()} torch thread(s).",
        table(collector) + [
            "", "Drift: 1 - cosine between a token's K (or V) at consecutive steps, mean over "
            "tokens of the group (the token committed in between excluded). Tracked token's "
            "K-drift rank: where the most-attended unmasked token's K drift falls among all "
            "unmasked tokens at that layer (0 = smallest drift, 1 = largest; 0.5 = typical). "
            "Off-window MASK share: the share of the window rows' attention (summed over heads "
            "and rows) that lands on masked positions past the window. Similarity: "
            "Elastic-Cache's statistic (cosine along the head axis, mean over keys) between the "
            "tracked token's attention rows at consecutive steps. Faint keys: the share of keys "
            "whose weight norm over heads, in the tracked token's row, is below 1e-6 at both "
            "steps (their cosine is ~0 under torch's eps, whatever the drift). Steps < 0.9: the "
            "share of steps where the statistic as computed is below gamma 0.9 at that layer "
            "(Elastic-Cache refreshes from the first such layer on).", "",
            f"![drift]({name}_drift.png) ![mass vs drift]({name}_mass_vs_drift.png)",
            f"![off-window]({name}_offwindow.png) ![similarity]({name}_similarity.png)"])


if __name__ == "__main__":
    main()
