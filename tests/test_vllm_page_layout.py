"""page_layout "kv": pages hold K and V only (half the memory), for servers that never run
Elastic-Cache; the other policies give the same tokens, and elastic is refused by name."""

from __future__ import annotations

import gc

import pytest

from helpers import MAX_MODEL_LEN

PROMPTS = [[2, 3, 100, 4], [2, 3, 120, 121, 122, 123, 124, 4]]
CASES = [dict(gen_length=32, block_length=8),
         dict(gen_length=32, block_length=8, cache_policy="dual"),
         dict(gen_length=32, schedule="window", window_length=8, threshold=0.3,
              cache_policy="prefix")]


@pytest.fixture(scope="module")
def kv_only_llm(tiny_model):
    from vllm import LLM

    engine = LLM(model=tiny_model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0,
                 additional_config={"diffusion": {"page_layout": "kv"}})
    yield engine
    del engine
    gc.collect()


def generate(llm, case):
    from vllm import SamplingParams

    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                        SamplingParams(temperature=0.0, max_tokens=None, extra_args=case),
                        use_tqdm=False)
    return [(list(o.outputs[0].token_ids), o.kv_transfer_params) for o in outs]


def test_kv_only_pages_give_the_same_tokens_with_half_the_row(kv_only_llm, llm):
    for case in CASES:
        assert generate(kv_only_llm, case) == generate(llm, case), case
    # The same KV budget holds twice the tokens: rows are [K|V] instead of [K|V|Q|H], and
    # the tiny model's Q and layer input are as wide as K and V together.
    blocks = [e.llm_engine.vllm_config.cache_config.num_gpu_blocks for e in (kv_only_llm, llm)]
    assert blocks[0] >= 2 * blocks[1] - 1, blocks


def test_elastic_is_refused_naming_cache_policy_and_the_engine_keeps_serving(kv_only_llm):
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError) as e:
        generate(kv_only_llm, dict(CASES[0], cache_policy="elastic"))
    assert e.value.parameter == "cache_policy" and "page_layout" in str(e.value)
    assert generate(kv_only_llm, CASES[0])[0][0]


def test_each_engine_in_a_process_validates_with_its_own_settings(kv_only_llm, llm):
    """Two engines in one process: the K/V-only one refuses elastic, the default one (created
    first, so not the last configured) still runs it."""
    from vllm.exceptions import VLLMValidationError

    elastic = dict(gen_length=32, schedule="window", window_length=8, threshold=0.3,
                   cache_policy="elastic", gamma=0.9)
    assert all(ids for ids, _ in generate(llm, elastic))
    with pytest.raises(VLLMValidationError):
        generate(kv_only_llm, elastic)
