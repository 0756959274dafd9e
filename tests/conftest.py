"""Shared fixtures: one tiny random checkpoint, its oracle and tokenizer, one `vllm.LLM` and one
`vllm serve` for the whole session (an engine start costs ~35 s). Helpers are in helpers.py."""

from __future__ import annotations

import os

import pytest
import torch

# vLLM's CPU backend: a small explicit KV budget keeps engine start fast and memory low.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
# Lets tests send a function to the workers (collective_rpc) for fault injection.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

from helpers import (MAX_MODEL_LEN, SERVE_DIFFUSION, SERVE_MAX_MODEL_LEN,  # noqa: E402
                     make_checkpoint, serve)


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
def llada_v_model(tmp_path_factory) -> str:
    from helpers import make_llada_v_checkpoint

    return make_llada_v_checkpoint(str(tmp_path_factory.mktemp("tiny-llada-v-engine")))


@pytest.fixture(scope="session")
def llada_v_reference(llada_v_model):
    from vllm_elastic.oracles.llada_v import ReferenceLLaDAV

    return ReferenceLLaDAV.from_pretrained(llada_v_model)


@pytest.fixture(scope="session")
def llada_v_tokenizer(llada_v_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llada_v_model)


@pytest.fixture(scope="session")
def llm(tiny_model):
    """One vllm.LLM engine with the plugin, shared by every test module that needs one."""
    from vllm import LLM

    engine = LLM(model=tiny_model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0)
    yield engine
    del engine


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    """One `vllm serve` of the tiny model, shared by the HTTP test modules."""
    import json

    with serve(tiny_model, tmp_path_factory.mktemp("serve") / "server.log",
               "--max-model-len", str(SERVE_MAX_MODEL_LEN),
               "--additional-config", json.dumps({"diffusion": SERVE_DIFFUSION})) as url:
        yield url
