"""`vllm serve` of a LLaDA-V checkpoint: chat completions with a base64 data-URL image answer as
the oracle does; an image the request cannot hold, a corrupt or non-image data URL, more
images than allowed, and an image sent to a text-only model are each a 400 naming the problem,
and the servers keep serving."""

from __future__ import annotations

import base64
import json

import pytest

from helpers import LLADA_V_BLOCKS as BLOCKS
from helpers import LLADA_V_SIZES as SIZES
from helpers import data_url, picture, post, serve
from helpers import llada_v_expected as expected

MAX_IMAGES = 2
SERVE_LEN = 256


@pytest.fixture(scope="module")
def llada_v_server(llada_v_model, tmp_path_factory):
    with serve(llada_v_model, tmp_path_factory.mktemp("serve-llada-v") / "server.log",
               "--max-model-len", str(SERVE_LEN),
               "--limit-mm-per-prompt", json.dumps({"image": MAX_IMAGES}),
               "--additional-config", json.dumps({"diffusion": BLOCKS})) as url:
        yield url


def chat(url: str, parts: list[dict], **more):
    from vllm_elastic.oracles.llada_v import SYSTEM_MESSAGE

    return post(url, "/v1/chat/completions", {
        "messages": [{"role": "system", "content": SYSTEM_MESSAGE},
                     {"role": "user", "content": parts}], "temperature": 0.0, **more})


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_chat_completion_with_an_image_matches_the_oracle(llada_v_server, llada_v_reference,
                                                         llada_v_tokenizer):
    image = picture(*SIZES[0], seed=9)
    r = chat(llada_v_server, [image_part(data_url(image)),
                              {"type": "text", "text": "What is in the image?"}])
    assert r.status_code == 200, r.text
    want = expected(llada_v_reference, llada_v_tokenizer, "What is in the image?", [image],
                    BLOCKS)
    text = r.json()["choices"][0]["message"]["content"]
    assert text == llada_v_tokenizer.decode(want, skip_special_tokens=True)


NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"not a picture").decode()


@pytest.mark.parametrize("parts, words", [
    ([image_part("data:image/png;base64,@@@@")], ["base64"]),  # vLLM's own message
    ([image_part(NOT_AN_IMAGE)], ["image"]),
    ([image_part(data_url(picture(9, 9)))] * (MAX_IMAGES + 1), ["image", str(MAX_IMAGES)]),
    ([image_part(data_url(picture(100, 70)))], ["max_model_len"]),  # canvas > 256 tokens
], ids=["corrupt-base64", "not-an-image", "too-many-images", "canvas-too-long"])
def test_bad_images_are_400_then_the_server_still_serves(llada_v_server, parts, words):
    gen = {"vllm_xargs": {"gen_length": 200, "block_length": 8, "steps": 200}} \
        if "max_model_len" in words else {}
    r = chat(llada_v_server, parts + [{"type": "text", "text": "What?"}], **gen)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert all(w in message for w in words), message
    ok = chat(llada_v_server, [image_part(data_url(picture(9, 12))),
                               {"type": "text", "text": "Still there?"}])
    assert ok.status_code == 200, ok.text


def test_an_image_for_a_text_only_model_is_400(server):
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": [
        image_part(data_url(picture(9, 9))), {"type": "text", "text": "What?"}]}]})
    assert r.status_code == 400, r.text
    assert "not a multimodal model" in r.json()["error"]["message"]
    ok = post(server, "/v1/chat/completions",
              {"messages": [{"role": "user", "content": "Hi"}]})
    assert ok.status_code == 200, ok.text
