"""Shared fixtures: tiny random LLaDA checkpoints made on the fly (no model hub here)."""

from __future__ import annotations

import os

import pytest
import torch

# vLLM's CPU backend: a small explicit KV budget keeps engine start fast and memory low.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")

EOS_BOOST = 2.5
MAX_MODEL_LEN = 128  # scales the EOS row of the LM head so some canvases stop early


def make_checkpoint(path: str, layers: int = 2, heads: int = 2, kv_heads: int | None = None,
                    init_scale: float = 4.0, eos_boost: float = EOS_BOOST, seed: int = 0) -> str:
    """A random LLaDA checkpoint whose outputs vary (init_scale) and that emits EOS sometimes."""
    from safetensors.torch import load_file, save_file

    from vllm_elastic.checkpoint import EOS_ID, write_random_checkpoint

    write_random_checkpoint(path, layers=layers, d_model=128, heads=heads, kv_heads=kv_heads,
                            seed=seed, init_scale=init_scale)
    file = os.path.join(path, "model.safetensors")
    state = load_file(file)
    state["model.transformer.ff_out.weight"][EOS_ID] *= eos_boost
    save_file(state, file, metadata={"format": "pt"})
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-llada")))


@pytest.fixture(scope="session")
def reference(tiny_model):
    from vllm_elastic.reference import ReferenceLLaDA

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
