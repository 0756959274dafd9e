"""The Llama-named LLaDA (`LLaDA-8B-Instruct-HF`, the rename LLaDA-V was trained from): the same
tensors under `model.layers.N.self_attn.q_proj`-style names and a config with Llama's field
names load through our LLaDA loader with no flags and decode like the oracle."""

from __future__ import annotations

import json
import os
import shutil

from helpers import oracle, sampling

# OLMo-style config field -> the rename's Llama-style field.
LLAMA_FIELDS = {"d_model": "hidden_size", "n_layers": "num_hidden_layers",
                "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads",
                "mlp_hidden_size": "intermediate_size",
                "max_sequence_length": "max_position_embeddings"}
CASES = [dict(gen_length=32, block_length=8),
         dict(gen_length=32, schedule="window", window_length=8, threshold=0.3,
              cache_policy="elastic", full_update=True)]


def llama_named_copy(source: str, out: str) -> str:
    from safetensors.torch import load_file, save_file

    from vllm_elastic.models.llama_names import llama_name

    shutil.copytree(source, out)
    state = load_file(os.path.join(source, "model.safetensors"))
    renamed = {llama_name(name): tensor for name, tensor in state.items()}
    assert None not in renamed and len(renamed) == len(state)
    save_file(renamed, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    config = {LLAMA_FIELDS.get(k, k): v for k, v in config.items()
              if k not in ("auto_map", "weight_tying", "embedding_size", "block_type")}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return out


def test_llama_named_llada_loads_and_decodes_like_the_oracle(tiny_model, reference, tmp_path):
    from safetensors.torch import load_file
    from vllm import LLM

    from helpers import MAX_MODEL_LEN

    model = llama_named_copy(tiny_model, str(tmp_path / "llada-hf"))
    names = set(load_file(f"{model}/model.safetensors"))
    assert "model.layers.0.self_attn.q_proj.weight" in names and "lm_head.weight" in names
    llm = LLM(model=model, dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0)
    try:
        prompts = [[2, 3, 100, 4], [2, 3, 120, 121, 122, 5, 3, 130, 4]]
        for case in CASES:
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sampling(case),
                                use_tqdm=False)
            for prompt, out in zip(prompts, outs):
                assert list(out.outputs[0].token_ids) == oracle(reference, prompt, case), case
    finally:
        del llm
