"""The oracle itself: LLaDA's schedule, threshold commits, seeding, EOS cut."""

import torch

from vllm_elastic.decoding.sampling import transfer_schedule
from vllm_elastic.params import DiffusionParams
from vllm_elastic.oracles.llada import cut_at_eos, generate


def test_transfer_schedule_is_even_split_with_remainder_first():
    assert transfer_schedule(10, 4) == [3, 3, 2, 2]
    assert transfer_schedule(4, 6) == [1, 1, 1, 1, 0, 0]
    assert sum(transfer_schedule(32, 7)) == 32


def test_generate_fills_the_canvas_and_never_emits_mask(reference):
    p = DiffusionParams(gen_length=16, block_length=8)
    out = generate(reference, [2, 3, 40, 41, 4], p)
    assert len(out) == 16 and reference.config.mask_token_id not in out


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(reference):
    prompt = [2, 3, 50, 60, 70, 4]
    greedy = DiffusionParams(gen_length=16, block_length=8)
    assert generate(reference, prompt, greedy) == generate(reference, prompt, greedy)
    s1 = DiffusionParams(gen_length=16, block_length=8, temperature=1.0, seed=1)
    s2 = DiffusionParams(gen_length=16, block_length=8, temperature=1.0, seed=2)
    assert generate(reference, prompt, s1) == generate(reference, prompt, s1)
    assert generate(reference, prompt, s1) != generate(reference, prompt, s2)


def test_threshold_one_commits_exactly_one_token_per_step(reference):
    """threshold=1.0 is never exceeded: one token per step, i.e. the top-1 schedule."""
    prompt = [2, 3, 50, 4]
    one_per_step = DiffusionParams(gen_length=16, block_length=8)
    thresh = DiffusionParams(gen_length=16, block_length=8, threshold=1.0)
    assert generate(reference, prompt, thresh) == generate(reference, prompt, one_per_step)


def test_reference_forward_is_bidirectional(reference):
    """Changing the last token changes the first position's logits (no causal mask)."""
    a = reference(torch.tensor([[2, 3, 50, 60]]))[0, 0]
    b = reference(torch.tensor([[2, 3, 50, 61]]))[0, 0]
    assert not torch.allclose(a, b)


def test_cut_at_eos_keeps_the_eos():
    assert cut_at_eos([5, 6, 0, 7, 0], 0) == [5, 6, 0]
    assert cut_at_eos([5, 6], 0) == [5, 6]
