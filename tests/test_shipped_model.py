"""The bundled trained model through vLLM: 20 held-out problems, full recompute, accuracy far
above chance (answers range over 0..99; the model scores ~75% with the reference decoder)."""

from __future__ import annotations

import gc
import pathlib

import pytest

MODEL = pathlib.Path(__file__).parents[1] / "examples" / "models" / "llada-tiny-arith"


@pytest.mark.timeout(600)
def test_shipped_model_solves_held_out_problems_through_vllm():
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from vllm_elastic.tools.training.data import chat_prompt_ids, extract_answer, test_problem_list

    problems = test_problem_list(20)
    tok = AutoTokenizer.from_pretrained(MODEL)
    prompts = [{"prompt_token_ids": chat_prompt_ids(tok, p.question)} for p in problems]
    llm = LLM(model=str(MODEL), dtype="float32", max_model_len=256, seed=0)
    try:
        outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=None, extra_args={
            "gen_length": 64, "block_length": 32}), use_tqdm=False)
    finally:
        del llm
        gc.collect()
    correct = sum(extract_answer(o.outputs[0].text) == p.answer for o, p in zip(outs, problems))
    assert correct >= 10, f"{correct}/20 held-out problems solved"
