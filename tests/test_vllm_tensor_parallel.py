"""Tensor parallel (2 ranks, one core each) over vLLM's mp and Ray executors: tokens equal the
single-rank engine's, including Elastic-Cache's data-dependent refresh decisions and the staleness
guard's (drift statistics are summed over ranks, staleness averaged; a rank deciding differently would hang the next collective
or change the tokens, and the timeout or the comparison catches it)."""

from __future__ import annotations

import gc

import pytest

from vllm_elastic.params import DiffusionParams
from vllm_elastic.oracles.llada import cut_at_eos, generate

PROMPTS = [[2, 3, 100, 4], [2, 3, 120, 121, 122, 123, 124, 125, 126, 5, 3, 130, 4],
           [2] + list(range(30, 60)) + [4]]
CASES = [
    dict(gen_length=32, block_length=8),
    dict(gen_length=32, block_length=8, temperature=0.8, seed=3, remasking="random"),
    dict(gen_length=32, schedule="window", window_length=8, threshold=0.3,
         cache_policy="elastic", gamma=0.9),
    dict(gen_length=32, schedule="window", window_length=8, threshold=0.3,
         cache_policy="elastic", gamma=0.99, track_num=2, drift_min_weight=1e-6),
    dict(gen_length=32, block_length=8, cache_policy="dual"),
    dict(gen_length=32, schedule="window", window_length=8, threshold=None,
         cache_policy="elastic", gamma=0.0, guard=True, guard_bound=0.4, guard_sentinels=4),
]


def run(llm, case):
    from vllm import SamplingParams

    case = dict(case)
    sp = SamplingParams(temperature=case.pop("temperature", 0.0), seed=case.pop("seed", None),
                        max_tokens=None, extra_args=case)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sp, use_tqdm=False)
    return [(list(o.outputs[0].token_ids), o.kv_transfer_params) for o in outs]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["mp", "ray"])
def test_tp2_equals_single_rank(backend, llm, tiny_model, reference, monkeypatch):
    from vllm import LLM

    from helpers import MAX_MODEL_LEN

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")  # one core per rank
    single = [run(llm, c) for c in CASES]
    tp = LLM(model=tiny_model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0,
             tensor_parallel_size=2, distributed_executor_backend=backend)
    try:
        for case, want in zip(CASES, single):
            assert run(tp, case) == want, case  # tokens and compute accounting
    finally:
        del tp
        gc.collect()
    # And the single-rank engine equals the oracle on the exact cases.
    for case, want in zip(CASES[:2], single[:2]):
        for prompt, (ids, _) in zip(PROMPTS, want):
            assert ids == cut_at_eos(generate(reference, prompt, DiffusionParams(**case)),
                                     reference.config.eos_token_id)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["mp", "ray"])
def test_tp2_under_vllm_serve_equals_single_rank(backend, llm, tiny_model, tmp_path):
    """`vllm serve --tensor-parallel-size 2` over mp and over Ray (a private Ray instance on
    127.0.0.1, as without RAY_ADDRESS) answers like the single-rank engine."""
    import requests

    from helpers import MAX_MODEL_LEN, serve

    tok = llm.get_tokenizer()
    texts = ["Once upon a time", "The quick brown fox"]
    with serve(tiny_model, tmp_path / "tp.log", "--max-model-len", str(MAX_MODEL_LEN),
               "--tensor-parallel-size", "2", "--distributed-executor-backend", backend,
               env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"}) as url:
        for case in (CASES[0], CASES[2]):
            want = run_texts(llm, tok, texts, case)
            for text, ids in zip(texts, want):
                r = requests.post(url + "/v1/completions", timeout=120, json={
                    "model": tiny_model, "prompt": text, "max_tokens": 32,
                    "return_token_ids": True, "vllm_xargs": case})
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["token_ids"] == ids, case


def run_texts(llm, tok, texts, case):
    from vllm import SamplingParams

    outs = llm.generate([{"prompt_token_ids": tok(t)["input_ids"]} for t in texts],
                        SamplingParams(temperature=0.0, max_tokens=32, extra_args=case),
                        use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["mp", "ray"])
def test_llada_v_tp2_equals_the_oracle(backend, llada_v_model, llada_v_reference,
                                       llada_v_tokenizer, monkeypatch):
    """LLaDA-V over 2 ranks: the vision tower's attention and MLP are sharded too, and the
    image features every rank splices in must be the oracle's."""
    from vllm import LLM

    from helpers import (LLADA_V_BLOCKS, LLADA_V_SIZES, llada_v_answer, llada_v_expected,
                         llada_v_request, picture, sampling)

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")  # one core per rank
    jobs = [("What is in the image?", [picture(*LLADA_V_SIZES[0])], LLADA_V_BLOCKS),
            ("Compare them.", [picture(*LLADA_V_SIZES[2]), picture(*LLADA_V_SIZES[3])],
             dict(LLADA_V_BLOCKS, temperature=0.8, seed=6)),
            ("What is in the image?", [picture(*LLADA_V_SIZES[3], seed=1)],
             dict(LLADA_V_BLOCKS, cache_policy="dual", refresh_interval=1))]
    tp = LLM(model=llada_v_model, dtype="float32", max_model_len=512, seed=0,
             tensor_parallel_size=2, distributed_executor_backend=backend)
    try:
        outs = tp.generate([llada_v_request(llada_v_tokenizer, q, ims) for q, ims, _ in jobs],
                           [sampling(c) for _, _, c in jobs], use_tqdm=False)
    finally:
        del tp
        gc.collect()
    for (question, images, case), out in zip(jobs, outs):
        oracle_case = {k: v for k, v in case.items()
                       if k not in ("cache_policy", "refresh_interval")}
        want = llada_v_expected(llada_v_reference, llada_v_tokenizer, question, images,
                                oracle_case)
        assert llada_v_answer(out, llada_v_reference.config.eot_token_id) == want, case
