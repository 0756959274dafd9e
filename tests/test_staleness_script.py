"""benchmarks/staleness.py: its simulation of a cache policy over simulated pages decodes what
the engine decodes (for prefix and dual this is the only check of their partial steps against
code outside the engine), and with every group fresh it is full recompute."""

import os
import sys

import pytest

from vllm_elastic.params import DiffusionParams
from vllm_elastic.oracles.llada import cut_at_eos, generate

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import staleness  # noqa: E402

PROMPTS = [[2, 3, 100, 4], [2, 3, 120, 121, 122, 123, 124, 5, 3, 130, 4]]
WINDOW = dict(gen_length=32, schedule="window", window_length=8, threshold=0.9)


def test_every_group_fresh_is_full_recompute(reference):
    params = DiffusionParams(**WINDOW, cache_policy="elastic", gamma=0.9)
    full = DiffusionParams(**WINDOW)
    for prompt in PROMPTS:
        answer, steps = staleness.decode(reference, prompt, params, staleness.VARIANTS["none"])
        assert steps >= 2
        assert answer == cut_at_eos(generate(reference, prompt, full),
                                    reference.config.eos_token_id)


@pytest.mark.parametrize("case", [
    dict(WINDOW, cache_policy="elastic", gamma=0.9),
    dict(WINDOW, cache_policy="elastic", gamma=0.999),
    dict(WINDOW, cache_policy="dual"), dict(WINDOW, cache_policy="prefix"),
    dict(gen_length=32, block_length=8, cache_policy="dual"),
    dict(gen_length=32, block_length=8, cache_policy="prefix"),
], ids=lambda c: f"{c.get('schedule', 'blocks')}-{c['cache_policy']}-{c.get('gamma', '')}")
def test_policy_simulation_decodes_what_the_engine_decodes(llm, reference, case):
    from vllm import SamplingParams

    outputs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                           SamplingParams(temperature=0.0, max_tokens=None, extra_args=case),
                           use_tqdm=False)
    eos = reference.config.eos_token_id
    for prompt, out in zip(PROMPTS, outputs):
        answer, _ = staleness.decode(reference, prompt, DiffusionParams(**case),
                                     staleness.VARIANTS["policy"])
        assert answer == cut_at_eos(list(out.outputs[0].token_ids), eos)
        acct = out.kv_transfer_params["diffusion"]
        assert acct["work_fraction"] < 1  # partial steps did run
