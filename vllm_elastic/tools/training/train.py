"""Train a small LLaDA on arithmetic word problems (LLaDA's SFT objective), on CPU.

    python -m vllm_elastic.tools.training.train --out DIR --minutes M [--task long] ...

--task arith: data.py's two-step problems (the bundled llada-tiny-arith); --task long:
long_data.py's 4-12 step problems with answers of 46-306 tokens (llada-long-arith). The
objective and masking options are objective.py's and masks.py's, the batches batches.py's,
the options options.py's. The model card (examples/models/README.md) has the exact command of
each shipped model and the history of runs that chose its options.

Learning rate: linear warmup over --warmup steps, constant, then a linear decay to 10% over
the last --decay-frac of the wall-clock budget (a time-based warmup-stable-decay schedule, so a
run of any --minutes ends annealed). --minutes is the run's total wall-clock budget (training,
evaluation and checkpoints), counted across resumes. Every --ckpt-minutes the full training
state (model, optimizer, step, elapsed time, RNG states) goes to --state atomically and the
shipped checkpoint (bf16, official LLaDA layout) is exported to --out; every --eval-minutes
the held-out exact-match accuracy of greedy oracle decoding is logged. Rerunning the same
command resumes from --state. Batches are a pure function of (seed, step), so a resumed run
sees the data it would have seen. Log: OUT/train_log.jsonl.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from vllm_elastic.tools.training.loop import train  # noqa: E402
from vllm_elastic.tools.training.options import parse_args  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
