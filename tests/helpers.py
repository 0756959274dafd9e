"""What the tests share: checkpoints made on the fly (no model hub here), sampling parameters
and oracle runs for a test case, and helpers for a `vllm serve` under test.

A *case* is one dict of a request's settings: vLLM's own sampling fields (temperature, seed,
top_p, top_k, max_tokens) and the diffusion extra args, as a user would pass them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from vllm_elastic.oracles.llada import cut_at_eos, generate
from vllm_elastic.params import DiffusionParams
from vllm_elastic.params.fields import APPLIES_TO

EOS_BOOST = 2.5  # scales the EOS row of the LM head so some canvases stop early
MAX_MODEL_LEN = 128  # the shared engines' max_model_len


def make_checkpoint(path: str, layers: int = 2, heads: int = 2, kv_heads: int | None = None,
                    init_scale: float = 4.0, eos_boost: float = EOS_BOOST, seed: int = 0) -> str:
    """A random LLaDA checkpoint whose outputs vary (init_scale) and that emits EOS sometimes."""
    from safetensors.torch import load_file, save_file

    from vllm_elastic.tools.checkpoint import EOS_ID, write_random_checkpoint

    write_random_checkpoint(path, layers=layers, d_model=128, heads=heads, kv_heads=kv_heads,
                            seed=seed, init_scale=init_scale)
    file = os.path.join(path, "model.safetensors")
    state = load_file(file)
    state["model.transformer.ff_out.weight"][EOS_ID] *= eos_boost
    save_file(state, file, metadata={"format": "pt"})
    return path


def make_dream_checkpoint(path: str, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                          init_scale: float = 4.0, eos_boost: float = EOS_BOOST,
                          seed: int = 0) -> str:
    """A random Dream checkpoint (GQA with fewer KV heads than heads, Q/K/V biases on) whose
    outputs vary and that emits EOS sometimes."""
    from safetensors.torch import load_file, save_file

    from vllm_elastic.tools.checkpoint import DREAM_EOS_ID, write_random_dream_checkpoint

    write_random_dream_checkpoint(path, layers=layers, hidden=128, heads=heads,
                                  kv_heads=kv_heads, seed=seed, init_scale=init_scale)
    file = os.path.join(path, "model.safetensors")
    state = load_file(file)
    state["lm_head.weight"][DREAM_EOS_ID] *= eos_boost
    save_file(state, file, metadata={"format": "pt"})
    return path


def make_llada_v_checkpoint(path: str, init_scale: float = 4.0, eot_boost: float = EOS_BOOST,
                            seed: int = 0, **shape) -> str:
    """A random LLaDA-V checkpoint (tiny tower: tools/llada_v_checkpoint.py) whose outputs
    vary and that emits <|eot_id|>, the token its decoding stops at, sometimes."""
    from safetensors.torch import load_file, save_file

    from vllm_elastic.tools.llada_v_checkpoint import EOT_ID, write_random_llada_v_checkpoint

    write_random_llada_v_checkpoint(path, seed=seed, init_scale=init_scale, **shape)
    file = os.path.join(path, "model.safetensors")
    state = load_file(file)
    state["lm_head.weight"][EOT_ID] *= eot_boost
    save_file(state, file, metadata={"format": "pt"})
    return path


# LLaDA-V test images (width, height): anyres grids 2x2, 1x1, 1x3 (tall), 3x1 (wide), 1x1 (tiny)
LLADA_V_SIZES = [(100, 70), (56, 56), (40, 130), (230, 60), (9, 12)]
LLADA_V_BLOCKS = dict(gen_length=24, block_length=8, steps=12)


def picture(width: int, height: int, seed: int = 0):
    """A random RGB PIL image."""
    import numpy as np
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def data_url(image) -> str:
    """A PIL image as a base64 PNG data URL (an OpenAI chat image_url)."""
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def llada_v_request(tokenizer, question: str, images: list) -> dict:
    """A vLLM prompt dict: the official chat prompt, and its images as multi_modal_data."""
    from vllm_elastic.oracles.llada_v import chat_prompt

    request = {"prompt": chat_prompt(tokenizer, question, len(images))}
    if images:
        request["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
    return request


def llada_v_expected(reference, tokenizer, question: str, images: list, case: dict
                     ) -> list[int]:
    """The LLaDA-V oracle's answer: official tokenization, splice, generate_with_embeds."""
    from vllm_elastic.oracles.llada_v import chat_prompt, tokenize_with_images
    from vllm_elastic.oracles.llada_v_generate import generate_with_embeds

    ids = tokenize_with_images(tokenizer, chat_prompt(tokenizer, question, len(images)))
    embeds = reference.prompt_embeds(ids, images or None)
    return generate_with_embeds(reference, embeds, DiffusionParams(**case))


def llada_v_answer(output, eot_id: int) -> list[int]:
    """vLLM's answer ids without the <|eot_id|> it stopped at (the official answer ends
    before it)."""
    ids = list(output.outputs[0].token_ids)
    if output.outputs[0].finish_reason == "stop" and ids and ids[-1] == eot_id:
        ids = ids[:-1]
    return ids


SERVE_MAX_MODEL_LEN = 128
SERVE_DIFFUSION = {"gen_length": 32, "block_length": 8}  # the shared server's defaults


# vLLM's own SamplingParams fields in a case; everything else is a diffusion extra arg.
SAMPLING_KEYS = ("temperature", "seed", "top_p", "top_k", "max_tokens")
# Cache-policy keys: the oracle is full recompute, so it drops them (from the field table, so a
# new policy knob is dropped too).
POLICY_KEYS = ("cache_policy",) + tuple(
    key for key, (field, _) in APPLIES_TO.items() if field in ("cache_policy", "guard"))


def sampling(case: dict | None = None, **more):
    """The SamplingParams of a case (`more` adds or overrides keys)."""
    from vllm import SamplingParams

    case = {**(case or {}), **more}
    return SamplingParams(temperature=case.get("temperature", 0.0), seed=case.get("seed"),
                          top_p=case.get("top_p", 1.0), top_k=case.get("top_k", 0),
                          max_tokens=case.get("max_tokens"),
                          extra_args={k: v for k, v in case.items() if k not in SAMPLING_KEYS})


def oracle(reference, prompt: list[int], case: dict | None = None, **more) -> list[int]:
    """The plain-PyTorch oracle's answer to a case: full recompute under the case's schedule,
    cut at the first EOS and at max_tokens, as vLLM returns it."""
    case = {**(case or {}), **more}
    params = DiffusionParams(**{k: v for k, v in case.items()
                                if k not in POLICY_KEYS and k != "max_tokens"})
    out = cut_at_eos(generate(reference, prompt, params), reference.config.eos_token_id)
    return out[: case["max_tokens"]] if case.get("max_tokens") else out


def post(server: str, path: str, body: dict, timeout: float = 120):
    return requests.post(server + path, json={"model": served_name(server), **body},
                         timeout=timeout)


def served_name(server: str, _cache={}) -> str:
    if server not in _cache:
        _cache[server] = requests.get(server + "/v1/models", timeout=10).json()["data"][0]["id"]
    return _cache[server]


def metric(server: str, name: str, label: str = "") -> float:
    for line in requests.get(server + "/metrics", timeout=10).text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line:
            return float(line.split()[-1])
    raise AssertionError(f"{name} {label} not on /metrics")


def wait_until(condition, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `condition()` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"{what}: not reached in {timeout} s")
        time.sleep(interval)


@contextlib.contextmanager
def serve(model: str, log_path, *args: str, env: dict | None = None, timeout: float = 300):
    """`vllm serve MODEL` on 127.0.0.1 and a free port; yields its URL; stops only the
    process group it started."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vllm_cli = os.path.join(os.path.dirname(sys.executable), "vllm")
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(
            [vllm_cli, "serve", model, "--host", "127.0.0.1", "--port", str(port),
             "--dtype", "float32", *args], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(env or {})})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"vllm serve exited with {proc.returncode}:\n"
                                f"{log.read()[-4000:]}")
                try:
                    if requests.get(url + "/health", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.time() > deadline:
                    pytest.fail(f"vllm serve did not become healthy in {timeout} s")
                time.sleep(1)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
