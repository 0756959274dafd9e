"""LLaDA-V through vLLM: an official-format checkpoint loads with no flags, images go through
vLLM's multimodal path (`LLM.generate` with multi_modal_data, `LLM.chat` with image_url parts),
and the answers equal the plain-PyTorch oracle's token for token (the official
generate_with_embeds semantics: forced -inf ids, trimmed vocabulary, stop at <|eot_id|>).
Every cache policy's exact setting equals `none` on image requests, under both schedules.

Shapes shrink here (tools/llada_v_checkpoint.py): 56 px tiles of 4 x 4 patches, so an image
takes 16 tokens per tile; image sizes are chosen so the anyres grid (1x1 .. 1x3, 3x1, 2x2) and
the unpadding vary."""

from __future__ import annotations

import pytest

from helpers import LLADA_V_BLOCKS as BLOCKS
from helpers import LLADA_V_SIZES as SIZES
from helpers import POLICY_KEYS, data_url, picture, sampling
from helpers import llada_v_answer as answer
from helpers import llada_v_expected as expected
from helpers import llada_v_request as request

WINDOW = dict(gen_length=24, schedule="window", window_length=8, threshold=0.3)
MAX_MODEL_LEN = 512


@pytest.fixture(scope="module")
def llada_v_llm(llada_v_model):
    from vllm import LLM

    engine = LLM(model=llada_v_model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0)
    yield engine
    del engine


JOBS = [  # (question, image sizes, case)
    ("What is in the image?", SIZES[:1], BLOCKS),
    ("Describe the chart.", SIZES[1:2], BLOCKS),
    ("What digits are there?", SIZES[2:3], dict(BLOCKS, temperature=0.9, seed=4)),
    ("What is in the image?", SIZES[3:4], dict(BLOCKS, threshold=0.2)),
    ("What is in the image?", SIZES[4:5], dict(BLOCKS, remasking="random", seed=2)),
    ("Compare the two images.", [SIZES[0], (56, 90)], BLOCKS),
    ("What is a chart?", [], BLOCKS),
    ("What is in the image?", SIZES[:1], dict(BLOCKS, gen_length=32, block_length=32,
                                              steps=16)),
]


def test_image_requests_match_the_oracle_in_one_batch(llada_v_llm, llada_v_reference,
                                                      llada_v_tokenizer):
    eot = llada_v_reference.config.eot_token_id
    images = [[picture(w, h, seed=i) for w, h in sizes] for i, (_, sizes, _) in enumerate(JOBS)]
    outs = llada_v_llm.generate(
        [request(llada_v_tokenizer, q, ims) for (q, _, _), ims in zip(JOBS, images)],
        [sampling(case) for _, _, case in JOBS], use_tqdm=False)
    stopped = 0
    for (question, sizes, case), ims, out in zip(JOBS, images, outs):
        want = expected(llada_v_reference, llada_v_tokenizer, question, ims, case)
        assert answer(out, eot) == want, (sizes, case)
        stopped += out.outputs[0].finish_reason == "stop"
    assert 0 < stopped < len(JOBS)  # some answers stop at <|eot_id|>, some run to the end


def test_prompt_has_one_placeholder_per_image_token(llada_v_llm, llada_v_reference,
                                                    llada_v_tokenizer):
    from vllm_elastic.models.llada_v_grid import num_image_tokens
    from vllm_elastic.models.llada_v_prompt import IMAGE_PLACEHOLDER
    from vllm_elastic.oracles.llada_v import chat_prompt, tokenize_with_images

    placeholder = llada_v_tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    image = picture(*SIZES[0])
    out = llada_v_llm.generate(request(llada_v_tokenizer, "Hi", [image]),
                               sampling(dict(BLOCKS, gen_length=8, block_length=8, steps=4)),
                               use_tqdm=False)[0]
    count = num_image_tokens(image.size, llada_v_reference.config, "anyres")
    official = tokenize_with_images(llada_v_tokenizer, chat_prompt(llada_v_tokenizer, "Hi", 1))
    mark = official.index(-200)
    assert list(out.prompt_token_ids) == (official[:mark] + [placeholder] * count
                                          + official[mark + 1:])


EXACT = [
    dict(BLOCKS, cache_policy="prefix", refresh_interval=1),
    dict(BLOCKS, cache_policy="dual", refresh_interval=1),
    dict(BLOCKS, cache_policy="elastic", full_update=True),
    dict(BLOCKS, cache_policy="elastic", gamma=0.0, guard=True, guard_bound=0.0),
    dict(WINDOW, cache_policy="none"),
    dict(WINDOW, cache_policy="prefix", refresh_interval=1),
    dict(WINDOW, cache_policy="dual", refresh_interval=1),
    dict(WINDOW, cache_policy="elastic", refresh_interval=1, gamma=0.0),
    dict(WINDOW, cache_policy="elastic", refresh_band=MAX_MODEL_LEN),  # covers any canvas
    dict(WINDOW, cache_policy="elastic", gamma=0.0, track_num=0, refresh_interval=1),
    dict(WINDOW, cache_policy="elastic", gamma=0.0, guard=True, guard_bound=0.0,
         temperature=0.8, seed=3),
]


def test_exact_cache_settings_equal_none_on_image_requests(llada_v_llm, llada_v_tokenizer):
    """Refreshes recompute image positions from layer 0: their features must still be there.
    Each exact setting and `none` under the same schedule and seed, all in one batch."""
    prompts = [request(llada_v_tokenizer, "What is in the image?", [picture(*size, seed=7)])
               for size in (SIZES[0], SIZES[2])]
    cases = EXACT + [{k: v for k, v in c.items() if k not in POLICY_KEYS} for c in EXACT]
    jobs = [(p, c) for c in cases for p in prompts]
    outs = llada_v_llm.generate([p for p, _ in jobs], [sampling(c) for _, c in jobs],
                                use_tqdm=False)
    half = len(jobs) // 2
    for (_, case), out, none in zip(jobs, outs[:half], outs[half:]):
        assert list(out.outputs[0].token_ids) == list(none.outputs[0].token_ids), case


def test_approximate_policies_run_on_image_requests(llada_v_llm, llada_v_tokenizer):
    prompt = request(llada_v_tokenizer, "What is in the image?", [picture(*SIZES[0])])
    for case in (dict(BLOCKS, cache_policy="dual"), dict(WINDOW, cache_policy="elastic"),
                 dict(WINDOW, cache_policy="elastic", guard=True)):
        out = llada_v_llm.generate(prompt, sampling(case), use_tqdm=False)[0]
        acct = out.kv_transfer_params["diffusion"]
        assert out.outputs[0].token_ids
        assert 0 < acct["token_layer_evals"] < acct["token_layer_evals_full"], case


def test_chat_with_an_image_url_part_matches_the_oracle(llada_v_llm, llada_v_reference,
                                                        llada_v_tokenizer):
    from vllm_elastic.oracles.llada_v import SYSTEM_MESSAGE

    image = picture(*SIZES[3], seed=5)
    messages = [{"role": "system", "content": SYSTEM_MESSAGE},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_url(image)}},
                    {"type": "text", "text": "What is in the image?"}]}]
    out = llada_v_llm.chat(messages, sampling(BLOCKS), use_tqdm=False)[0]
    want = expected(llada_v_reference, llada_v_tokenizer, "What is in the image?", [image],
                    BLOCKS)
    assert answer(out, llada_v_reference.config.eot_token_id) == want


def test_marks_that_do_not_match_the_images_are_refused(llada_v_llm, llada_v_tokenizer):
    prompt = request(llada_v_tokenizer, "Two?", [picture(*SIZES[0])])
    prompt["multi_modal_data"]["image"] = [picture(*SIZES[0]), picture(*SIZES[1])]
    with pytest.raises(Exception, match="1 <image> mark"):
        llada_v_llm.generate(prompt, sampling(BLOCKS), use_tqdm=False)
    out = llada_v_llm.generate(request(llada_v_tokenizer, "Still serving?", []),
                               sampling(BLOCKS), use_tqdm=False)[0]
    assert out.outputs[0].token_ids
