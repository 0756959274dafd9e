"""Scoring the candidates against full recompute and picking the fastest that keeps to the
target. A candidate's row: the share of answers token for token identical to full
recompute's (agreement), accuracy where the calibration file has answers, the work fraction
(token-layer evaluations / full recompute's), tokens/s (answer tokens before the first EOS
over the requests' seconds) and its speedup over full recompute.

Agreement is a share of n prompts, so it carries sampling error (50 prompts: about +-8
points at 90%): each row also gets its 90% Wilson interval, and the report says when the
pick's interval reaches below the target, where a held-out set may fall short of it."""

from __future__ import annotations

import math

from vllm_elastic.tools.tune.candidates import REFERENCE
from vllm_elastic.tools.tune.prompts import Calibration, extract_answer
from vllm_elastic.tools.tune.runs import answer_tokens


def score(name: str, requests: list[dict], reference: list[dict], prompts: list[Calibration],
          eos_id: int) -> dict:
    tokens = sum(len(answer_tokens(r["token_ids"], eos_id)) for r in requests)
    seconds = sum(r["seconds"] for r in requests)
    acct = [r["accounting"] for r in requests]
    scored = [(r, p) for r, p in zip(requests, prompts) if p.answer is not None]
    return {
        "candidate": name, "params": requests[0]["params"], "n": len(requests),
        "agreement": sum(r["token_ids"] == f["token_ids"] for r, f in zip(requests, reference))
        / len(requests),
        "accuracy": (sum(extract_answer(r["text"]) == p.answer for r, p in scored) / len(scored)
                     if scored else None),
        "work_fraction": sum(a["token_layer_evals"] for a in acct)
        / sum(a["token_layer_evals_full"] for a in acct),
        "tokens_per_s": tokens / seconds if seconds else 0.0,
    }


Z90 = 1.6449  # two-sided 90% normal quantile


def wilson_interval(share: float, n: int, z: float = Z90) -> tuple[float, float]:
    """The Wilson score interval of a share observed over n trials."""
    if n == 0:
        return 0.0, 1.0
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def caution(picked: dict, min_agreement: float) -> str | None:
    """A warning when the pick's agreement is not clearly above the target, else None."""
    low, high = wilson_interval(picked["agreement"], picked["n"])
    if picked["candidate"] == REFERENCE or low >= min_agreement:
        return None
    return (f"The pick's agreement, {picked['agreement']:.0%} over {picked['n']} prompts, has "
            f"a 90% interval of {low:.0%}-{high:.0%}, reaching below the target "
            f"({min_agreement:.0%}): on other prompts it may fall short. More prompts narrow "
            f"the interval; a higher --min-agreement buys margin.")


def add_speedups(rows: list[dict]) -> None:
    ref = next(r for r in rows if r["candidate"] == REFERENCE)
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / ref["tokens_per_s"] if ref["tokens_per_s"] else 0.0


def meets(row: dict, reference: dict, min_agreement: float, max_accuracy_drop: float | None
          ) -> bool:
    if row["agreement"] < min_agreement:
        return False
    if max_accuracy_drop is None or row["accuracy"] is None:
        return True
    return row["accuracy"] >= reference["accuracy"] - max_accuracy_drop - 1e-12


def pick(rows: list[dict], min_agreement: float, max_accuracy_drop: float | None) -> dict:
    """The fastest row that meets the target; full recompute meets any (it is the target)."""
    ref = next(r for r in rows if r["candidate"] == REFERENCE)
    fit = [r for r in rows if r is ref or meets(r, ref, min_agreement, max_accuracy_drop)]
    return max(fit, key=lambda r: r["tokens_per_s"])


def frontier(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both agreement and speed (the accuracy/speed frontier)."""
    return [r for r in rows if not any(
        o["agreement"] >= r["agreement"] and o["tokens_per_s"] > r["tokens_per_s"]
        or o["agreement"] > r["agreement"] and o["tokens_per_s"] >= r["tokens_per_s"]
        for o in rows)]


def table(rows: list[dict], picked: dict) -> list[str]:
    front = {r["candidate"] for r in frontier(rows)}
    out = ["| candidate | agreement with full | its 90% interval | accuracy | work fraction "
           "| tokens/s | speedup | frontier |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["tokens_per_s"]):
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}"
        mark = "picked" if r is picked else ("yes" if r["candidate"] in front else "")
        low, high = wilson_interval(r["agreement"], r["n"])
        out.append(f"| {r['candidate']} | {r['agreement']:.1%} | {low:.0%}-{high:.0%} | {acc} | "
                   f"{r['work_fraction']:.3f} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x "
                   f"| {mark} |")
    return out


def plot(rows: list[dict], picked: dict, path: str) -> bool:
    """Agreement against speedup, the frontier joined, the pick circled. False without
    matplotlib (the table and JSON are written regardless)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["speedup"] for r in rows], [r["agreement"] for r in rows], s=18)
    for r in rows:
        ax.annotate(r["candidate"], (r["speedup"], r["agreement"]), fontsize=7)
    front = sorted(frontier(rows), key=lambda r: r["speedup"])
    ax.plot([r["speedup"] for r in front], [r["agreement"] for r in front], "--", lw=0.8)
    ax.scatter([picked["speedup"]], [picked["agreement"]], s=120, facecolors="none",
               edgecolors="red", label=f"picked: {picked['candidate']}")
    ax.set(xlabel="speedup over full recompute (x)", ylabel="answers identical to full",
           title="tune: accuracy/speed frontier")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
