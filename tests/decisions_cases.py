"""The elastic cases whose refresh decisions are pinned in tests/data/elastic_decisions.json:
the authors' drift statistic and most-attended pick as implemented before the statistics were
merged into one score pass (commit c054a75). `python tests/decisions_cases.py OUT` records
them with whatever implementation is importable (it is how the file was written)."""

from __future__ import annotations

import json
import os
import sys
import tempfile

WINDOW = dict(gen_length=32, schedule="window", window_length=8, threshold=0.3)
RANDOM_CASES = [dict(WINDOW, cache_policy="elastic", gamma=g, track_num=t, drift_min_weight=w)
                for g, t, w in ((0.9, 1, 0.0), (0.99, 2, 0.0), (0.999, 1, 1e-6), (1.0, 3, 0.0))]
RANDOM_PROMPTS = [[2, 3, 100, 4], [2, 3, 120, 121, 122, 123, 124, 125, 126, 5, 3, 130, 4],
                  [2] + list(range(30, 60)) + [4]]
LONG = dict(gen_length=320, schedule="window", window_length=32, threshold=0.9)
LONG_CASES = [dict(LONG, cache_policy="elastic", gamma=g) for g in (0.97, 0.99)]
LONG_PROBLEMS = 3


def long_prompts(tokenizer) -> list[list[int]]:
    from vllm_elastic.tools.training.data import chat_prompt_ids
    from vllm_elastic.tools.training.long_data import test_problem_list

    return sorted((chat_prompt_ids(tokenizer, p.question) for p in test_problem_list(10)),
                  key=len)[:LONG_PROBLEMS]


def decisions(llm, prompts, cases) -> list[dict]:
    from helpers import sampling

    jobs = [(p, c) for c in cases for p in prompts]
    outs = llm.generate([{"prompt_token_ids": p} for p, _ in jobs], [sampling(c) for _, c in jobs],
                        use_tqdm=False)
    return [{"tokens": list(o.outputs[0].token_ids),
             "refreshes": o.kv_transfer_params["diffusion"]["refreshes_per_layer"],
             "work": o.kv_transfer_params["diffusion"]["token_layer_evals"]} for o in outs]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from transformers import AutoTokenizer
    from vllm import LLM

    from helpers import MAX_MODEL_LEN, make_checkpoint

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    llm = LLM(model=make_checkpoint(tempfile.mkdtemp()), dtype="float32",
              max_model_len=MAX_MODEL_LEN, seed=0)
    out = {"random": decisions(llm, RANDOM_PROMPTS, RANDOM_CASES)}
    del llm
    long_model = os.path.join(root, "examples", "models", "llada-long-arith")
    llm = LLM(model=long_model, dtype="float32", max_model_len=512, seed=0)
    out["long"] = decisions(llm, long_prompts(AutoTokenizer.from_pretrained(long_model)),
                            LONG_CASES)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
