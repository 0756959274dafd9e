"""The worker's incremental Canvas against the reference generate, on reference logits."""

import pytest
import torch

from vllm_elastic.decoding import Canvas
from vllm_elastic.params import DiffusionParams
from vllm_elastic.reference import generate


def run_canvas(model, prompt, params):
    canvas = Canvas(prompt, params, model.config.mask_token_id)
    released = []
    while not canvas.finished:
        rows = list(canvas.query_positions())
        logits = model(canvas.tokens[None])[0, rows]
        released += canvas.step(logits)
    return canvas, released


@pytest.mark.parametrize("params", [
    DiffusionParams(gen_length=16, block_length=8),
    DiffusionParams(gen_length=16, block_length=16, steps=8),
    DiffusionParams(gen_length=24, block_length=8, steps=6, remasking="random", temperature=0.8,
                    seed=5),
    DiffusionParams(gen_length=16, block_length=8, threshold=0.3),
])
@torch.no_grad()
def test_canvas_matches_reference_and_releases_everything_in_order(reference, params):
    prompt = [2, 3, 100, 101, 102, 4]
    canvas, released = run_canvas(reference, prompt, params)
    expected = generate(reference, prompt, params)
    assert canvas.tokens[len(prompt):].tolist() == expected
    assert released == expected  # every token released exactly once, left to right
