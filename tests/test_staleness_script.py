"""benchmarks/staleness.py: its simulation of the elastic policy over simulated pages decodes
what the engine decodes, and with every group fresh it is full recompute."""

import os
import sys

import pytest

from vllm_elastic.params import DiffusionParams
from vllm_elastic.reference import cut_at_eos, generate

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


@pytest.mark.parametrize("gamma", [0.9, 0.999])
def test_elastic_variant_decodes_what_the_engine_decodes(llm, reference, gamma):
    from vllm import SamplingParams

    case = dict(WINDOW, cache_policy="elastic", gamma=gamma)
    outputs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                           SamplingParams(temperature=0.0, max_tokens=None, extra_args=case),
                           use_tqdm=False)
    eos = reference.config.eos_token_id
    for prompt, out in zip(PROMPTS, outputs):
        answer, _ = staleness.decode(reference, prompt, DiffusionParams(**case),
                                     staleness.VARIANTS["elastic"])
        assert answer == cut_at_eos(list(out.outputs[0].token_ids), eos)
