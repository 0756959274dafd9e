"""When the paged KV cache is nearly full, diffusion requests wait their turn: all complete,
none is dropped or truncated, and each gets the tokens it would get alone."""

from __future__ import annotations

import gc

from conftest import MAX_MODEL_LEN
from vllm_elastic.params import DiffusionParams
from vllm_elastic.reference import cut_at_eos, generate

PROMPTS = [[2, 3, 100 + i, 4, 7 + i] for i in range(6)]


def test_requests_wait_for_blocks_and_all_complete(tiny_model, reference, monkeypatch):
    from vllm import LLM, SamplingParams

    # Room for two canvases at a time: 3 blocks of 128 tokens, block 0 being vLLM's null block.
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    row_bytes = (2 * 128 + 128 + 128) * 4  # [K|V|Q|H] of the tiny model, fp32
    llm = LLM(model=tiny_model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0,
              kv_cache_memory_bytes=3 * 128 * row_bytes * reference.config.n_layers)
    try:
        case = dict(gen_length=64, block_length=16, cache_policy="elastic", gamma=1.0,
                    refresh_layers="all", schedule="window", window_length=8, threshold=0.3)
        outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                            SamplingParams(temperature=0.0, max_tokens=None, extra_args=case),
                            use_tqdm=False)
        oracle = DiffusionParams(gen_length=64, schedule="window", window_length=8,
                                 threshold=0.3)
        assert len(outs) == len(PROMPTS)
        for prompt, out in zip(PROMPTS, outs):
            assert out.outputs[0].finish_reason in ("stop", "length")
            assert list(out.outputs[0].token_ids) == cut_at_eos(
                generate(reference, prompt, oracle), reference.config.eos_token_id)
    finally:
        del llm
        gc.collect()
