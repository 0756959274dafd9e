"""Shared fixtures: tiny random LLaDA checkpoints made on the fly (no model hub here)."""

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
import torch

# vLLM's CPU backend: a small explicit KV budget keeps engine start fast and memory low.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
# Lets tests send a function to the workers (collective_rpc) for fault injection.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

EOS_BOOST = 2.5
MAX_MODEL_LEN = 128  # scales the EOS row of the LM head so some canvases stop early


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-llada")))


@pytest.fixture(scope="session")
def reference(tiny_model):
    from vllm_elastic.oracles.llada import ReferenceLLaDA

    torch.manual_seed(0)
    return ReferenceLLaDA.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def llm(tiny_model):
    """One vllm.LLM engine with the plugin, shared by every test module that needs one."""
    from vllm import LLM

    engine = LLM(model=tiny_model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0)
    yield engine
    del engine


SERVE_MAX_MODEL_LEN = 128
SERVE_DIFFUSION = {"gen_length": 32, "block_length": 8}  # the shared server's defaults


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    """One `vllm serve` of the tiny model, shared by the HTTP test modules."""
    import json

    with serve(tiny_model, tmp_path_factory.mktemp("serve") / "server.log",
               "--max-model-len", str(SERVE_MAX_MODEL_LEN),
               "--additional-config", json.dumps({"diffusion": SERVE_DIFFUSION})) as url:
        yield url


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
