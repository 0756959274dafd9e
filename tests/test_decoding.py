"""The worker's incremental Canvas against the reference generate, on reference logits."""

import pytest
import torch

from vllm_elastic.decoding.canvas import Canvas
from vllm_elastic.params import DiffusionParams
from vllm_elastic.oracles.llada import cut_at_eos, generate


def run_canvas(model, prompt, params):
    canvas = Canvas(prompt, params, model.config.mask_token_id, model.config.eos_token_id)
    released = []
    while not canvas.finished:
        rows = canvas.commit_positions()
        logits = model(canvas.tokens[None])[0, rows]
        released += canvas.step(logits)
    return canvas, released


@pytest.mark.parametrize("params", [
    DiffusionParams(gen_length=16, block_length=8),
    DiffusionParams(gen_length=16, block_length=16, steps=8),
    DiffusionParams(gen_length=24, block_length=8, steps=6, remasking="random", temperature=0.8,
                    seed=5),
    DiffusionParams(gen_length=16, block_length=8, threshold=0.3),
    DiffusionParams(gen_length=32, schedule="window", window_length=8, threshold=0.3),
    DiffusionParams(gen_length=32, schedule="window", window_length=4, tokens_per_iter=2),
    DiffusionParams(gen_length=24, schedule="window", window_length=8, threshold=0.5,
                    temperature=0.7, seed=9, remasking="random"),
])
@torch.no_grad()
def test_canvas_matches_reference_and_releases_everything_in_order(reference, params):
    prompt = [2, 3, 100, 101, 102, 4]
    canvas, released = run_canvas(reference, prompt, params)
    expected = generate(reference, prompt, params)
    assert canvas.tokens[len(prompt):].tolist() == expected
    # Released once each, left to right, and everything up to the first EOS is released.
    eos = reference.config.eos_token_id
    assert released == expected[: len(released)]
    assert cut_at_eos(released, eos) == cut_at_eos(expected, eos)
