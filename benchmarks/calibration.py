"""Write a tune calibration file (JSONL, chat messages + answer) of held-out-style problems
disjoint from the benchmarks' evaluation problems (bench_policies' first N test problems).

    python benchmarks/calibration.py --task long --n 50 --out benchmarks/results/calib_long.jsonl
"""

from __future__ import annotations

import argparse
import json

from vllm_elastic.tools.training.batches import task_data

EVALUATION_N = 200  # bench_policies' --n: the problems a tuned pick is evaluated on


def calibration_problems(task: str, n: int, seed: int = 7) -> list:
    data = task_data(task)
    held_out = {p.question for p in data.test_problem_list(EVALUATION_N)}
    pool = data.test_problem_list(n + EVALUATION_N, seed=seed)
    picked = [p for p in pool if p.question not in held_out][:n]
    if len(picked) < n:
        raise SystemExit(f"only {len(picked)} problems disjoint from the evaluation set")
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("arith", "long"), default="long")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.out, "w") as f:
        for p in calibration_problems(args.task, args.n):
            f.write(json.dumps({"messages": [{"role": "user", "content": p.question}],
                                "answer": str(p.answer)}) + "\n")


if __name__ == "__main__":
    main()
