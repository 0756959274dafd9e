"""Accuracy against speed for rows of bench_policies tables measured alike (same model, task,
n, machine and day), or of one bench_interleaved.py run: one point per row, speed relative to
the reference row.

    python benchmarks/plot_frontier.py benchmarks/results/guard_long.json \
        benchmarks/results/band_long.json --gen-length 512 --reference window/none \
        --out benchmarks/results/keep_long.png
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", help="bench_policies or bench_interleaved OUT.json")
    ap.add_argument("--gen-length", type=int, required=True)
    ap.add_argument("--reference", default="window/none")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = []
    for path in args.tables:
        table = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            found = json.load(f)
        rows += [dict(r, table=table) for r in _rows(found, args.gen_length)
                 if r["gen_length"] == args.gen_length]
    # A config measured in several tables (`tuned`, a rerun reference) is labelled by table.
    seen = [r["config"] for r in rows]
    for r in rows:
        r["label"] = (f"{r['config']} ({r['table']})" if seen.count(r["config"]) > 1
                      or r["config"] == "tuned" else r["config"])
    # The reference: the first table's (speeds are relative to it; tables measured alike).
    reference = next(r for r in rows if r["config"] == args.reference)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        speedup = r["tokens_per_s"] / reference["tokens_per_s"]
        ax.scatter(speedup, 100 * r["accuracy"], s=20)
        ax.annotate(r["label"], (speedup, 100 * r["accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.axhline(100 * reference["accuracy"] - 1, ls="--", lw=0.8, color="grey")
    ax.axvline(2.5, ls=":", lw=0.8, color="grey")
    ax.set(xlabel=f"tokens/s vs {args.reference} (x)", ylabel="exact-match accuracy (%)",
           title=f"gen {args.gen_length}: dashed = 1 point below {args.reference}, "
                 f"dotted = 2.5x")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


def _rows(found, gen_length: int) -> list[dict]:
    """bench_policies rows as they are; a bench_interleaved run (one gen length, its
    settings' totals) as rows named like bench_policies' (`none` -> `window/none`)."""
    if isinstance(found, list):
        return found
    names = {"none": "window/none", "dual": "window/dual"}
    return [{"config": names.get(name, name), "gen_length": gen_length,
             "tokens_per_s": t["tokens_per_s"], "accuracy": t["accuracy"]}
            for name, t in found["totals"].items()]


if __name__ == "__main__":
    main()
