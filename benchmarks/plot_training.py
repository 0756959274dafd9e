"""Plot the training loss (and held-out accuracy) of the shipped tiny LLaDA.

    python benchmarks/plot_training.py [--log examples/models/llada-tiny-arith/train_log.jsonl]
                                       [--out benchmarks/results/training_loss.png]

Reads the JSONL log written by `python -m vllm_elastic.tools.training.train` (records of type
"train": step, elapsed_s, loss, ...; type "eval": step, elapsed_s, accuracy, ...).
"""

from __future__ import annotations

import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", default=os.path.join(ROOT, "examples/models/llada-tiny-arith/"
                                                        "train_log.jsonl"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "training_loss.png"))
    ap.add_argument("--smooth", type=int, default=10, help="moving average over N log records")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads the run trained on")
    a = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in open(a.log) if line.strip()]
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    steps = [r["step"] for r in train]
    loss = [r["loss"] for r in train]
    k = max(1, a.smooth)
    smooth = [sum(loss[max(0, i - k + 1): i + 1]) / len(loss[max(0, i - k + 1): i + 1])
              for i in range(len(loss))]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, loss, color="tab:blue", alpha=0.25, lw=0.8, label="loss (per log record)")
    ax.plot(steps, smooth, color="tab:blue", lw=1.6, label=f"loss ({k}-record average)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (LLaDA SFT; frontier rows mixed in where used)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [100 * r["accuracy"] for r in evals], "o-",
                 color="tab:red", label="held-out exact match (%), greedy, gen_length "
                                        f"{evals[-1]['gen_length']}")
        probed = [r for r in evals if r.get("frontier_result_accuracy") is not None]
        if probed:  # the trainer's left-to-right arithmetic probe (train.py)
            ax2.plot([r["step"] for r in probed],
                     [100 * r["frontier_result_accuracy"] for r in probed], "s--",
                     color="tab:green", label="held-out result digits right at the decoding "
                                              "frontier (%)")
        ax2.set_ylabel("held-out accuracy (%)")
        ax2.set_ylim(0, 100)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    minutes = train[-1]["elapsed_s"] / 60 if train else 0
    model = os.path.basename(os.path.dirname(os.path.abspath(a.log)))
    ax.set_title(f"{model}: {steps[-1] if steps else 0} steps, "
                 f"{train[-1]['tokens'] / 1e6 if train else 0:.1f}M tokens, {minutes:.0f} min "
                 f"on {a.threads} CPU thread(s)", fontsize=10)
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(a.out)


if __name__ == "__main__":
    main()
