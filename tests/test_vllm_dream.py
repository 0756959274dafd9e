"""Dream through vLLM: an official-format checkpoint (GQA with fewer KV heads than heads, Q/K/V
biases, untied head, shifted logits) loads with no flags and decodes token for token like the
plain-PyTorch oracle, under every schedule and every cache policy's exact setting."""

from __future__ import annotations

import pytest
import torch

from helpers import make_dream_checkpoint, oracle, sampling, serve

PROMPTS = [
    [2, 30, 31, 32, 3, 4],
    [2, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 3, 50],
    [2] + list(range(100, 131)) + [3],
]
BLOCKS = dict(gen_length=32, block_length=8)
WINDOW = dict(gen_length=32, schedule="window", window_length=8, threshold=0.3)


@pytest.fixture(scope="module")
def dream_model(tmp_path_factory) -> str:
    return make_dream_checkpoint(str(tmp_path_factory.mktemp("tiny-dream")))


@pytest.fixture(scope="module")
def dream_reference(dream_model):
    from vllm_elastic.oracles.dream import ReferenceDream

    return ReferenceDream.from_pretrained(dream_model)


@pytest.fixture(scope="module")
def dream_llm(dream_model):
    from vllm import LLM

    engine = LLM(model=dream_model, dtype="float32", max_model_len=128, seed=0)
    yield engine
    del engine






def test_checkpoint_is_dream_format_with_gqa_and_biases(dream_model):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(dream_model)
    assert cfg.model_type == "Dream" and cfg.architectures == ["DreamModel"]
    assert cfg.num_key_value_heads < cfg.num_attention_heads and not cfg.tie_word_embeddings
    names = set(load_file(f"{dream_model}/model.safetensors"))
    assert {"model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias",
            "model.layers.1.mlp.gate_proj.weight", "lm_head.weight",
            "model.embed_tokens.weight", "model.norm.weight"} <= names
    assert "model.layers.0.self_attn.o_proj.bias" not in names


def test_vllm_logits_are_the_oracles_unshifted_rows(dream_llm, dream_reference):
    ids = PROMPTS[1] + [dream_reference.config.mask_token_id] * 8
    got = torch.tensor(dream_llm.collective_rpc("canvas_logits", args=(ids,))[0])
    want = dream_reference(torch.tensor([ids]))[0]
    assert torch.allclose(got, want, atol=1e-4)


DREAM = dict(gen_length=32, schedule="dream", steps=16)
FULL = [
    dict(BLOCKS), dict(BLOCKS, steps=16, remasking="random", temperature=0.7, seed=3),
    dict(BLOCKS, threshold=0.2), dict(WINDOW), dict(WINDOW, temperature=0.9, seed=11),
    dict(WINDOW, threshold=None, tokens_per_iter=2),
    # Dream's own diffusion_generate: every alg, greedy and seeded, top_p / top_k, alg_temp.
    dict(DREAM, alg="origin"), dict(DREAM, alg="origin", temperature=0.8, seed=4),
    dict(DREAM, alg="maskgit_plus", temperature=0.6, seed=5, top_p=0.9),
    dict(DREAM, alg="topk_margin", steps=32), dict(DREAM, alg="entropy"),
    dict(DREAM, alg="entropy", temperature=1.0, seed=6, top_k=8, alg_temp=0.3),
    dict(DREAM, alg="entropy", steps=8, eps=0.05),
]


def test_full_recompute_equals_oracle_for_mixed_prompts_in_one_batch(dream_llm,
                                                                     dream_reference):
    jobs = [(p, c) for c in FULL for p in PROMPTS]
    outs = dream_llm.generate([{"prompt_token_ids": p} for p, _ in jobs],
                              [sampling(c) for _, c in jobs], use_tqdm=False)
    for (prompt, case), out in zip(jobs, outs):
        assert list(out.outputs[0].token_ids) == oracle(dream_reference, prompt, case), case
    lengths = {len(out.outputs[0].token_ids) for out in outs}
    assert len(lengths) > 2 and max(lengths) > 8  # answers of several lengths, some early EOS


EXACT = [
    dict(BLOCKS, cache_policy="prefix", refresh_interval=1),
    dict(BLOCKS, cache_policy="dual", refresh_interval=1),
    dict(WINDOW, cache_policy="prefix", refresh_interval=1),
    dict(WINDOW, cache_policy="dual", refresh_interval=1, temperature=0.8, seed=5),
    dict(WINDOW, cache_policy="elastic", full_update=True),
    dict(WINDOW, cache_policy="elastic", gamma=1.0, refresh_layers="all"),
    dict(WINDOW, cache_policy="elastic", gamma=0.0, refresh_interval=1),
    dict(DREAM, alg="entropy", cache_policy="prefix", refresh_interval=1),
    dict(DREAM, alg="maskgit_plus", cache_policy="dual", refresh_interval=1),
    dict(DREAM, alg="origin", temperature=0.8, seed=4, cache_policy="elastic",
         full_update=True),
]


def test_each_cache_policys_exact_setting_equals_full_recompute(dream_llm, dream_reference):
    jobs = [(p, c) for c in EXACT for p in PROMPTS]
    outs = dream_llm.generate([{"prompt_token_ids": p} for p, _ in jobs],
                              [sampling(c) for _, c in jobs], use_tqdm=False)
    for (prompt, case), out in zip(jobs, outs):
        assert list(out.outputs[0].token_ids) == oracle(dream_reference, prompt, case), case


@pytest.mark.parametrize("case", [
    dict(BLOCKS, cache_policy="prefix"), dict(BLOCKS, cache_policy="dual"),
    dict(WINDOW, cache_policy="dual"), dict(WINDOW, cache_policy="elastic", gamma=0.9),
], ids=lambda c: f"{c.get('schedule', 'blocks')}-{c['cache_policy']}")
def test_approximate_policies_run_on_dream_and_compute_less(dream_llm, dream_reference, case):
    outs = dream_llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sampling(case),
                              use_tqdm=False)
    for out in outs:
        ids = out.outputs[0].token_ids
        assert ids and dream_reference.config.mask_token_id not in ids
        acct = out.kv_transfer_params["diffusion"]
        assert 0 < acct["token_layer_evals"] <= acct["token_layer_evals_full"]
    assert any(o.kv_transfer_params["diffusion"]["work_fraction"] < 1 for o in outs)


@pytest.fixture(scope="module")
def dream_server(dream_model, tmp_path_factory):
    import json

    with serve(dream_model, tmp_path_factory.mktemp("dream-serve") / "server.log",
               "--max-model-len", "128",
               "--additional-config", json.dumps({"diffusion": BLOCKS})) as url:
        yield url


def test_vllm_serve_chat_completions_stream_and_400s_on_dream(dream_server, dream_model,
                                                              dream_reference):
    import json

    import requests
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(dream_model)
    messages = [{"role": "user", "content": "Tom has 3 apples and buys 4 more."}]
    body = {"model": dream_model, "messages": messages, "max_tokens": 32,
            "vllm_xargs": {"schedule": "window", "window_length": 8, "threshold": 0.3,
                           "cache_policy": "elastic", "full_update": True}}
    r = requests.post(dream_server + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    # ChatML: Dream's template (default system turn) renders the prompt the oracle decodes.
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           tokenize=True, return_dict=False)
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    case = dict(gen_length=32, schedule="window", window_length=8, threshold=0.3)
    want = oracle(dream_reference, list(prompt), case)
    text = r.json()["choices"][0]["message"]["content"]
    assert text == tokenizer.decode(want, skip_special_tokens=True)
    chunks = []
    with requests.post(dream_server + "/v1/chat/completions", json={**body, "stream": True},
                       stream=True, timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                chunks.append(delta.get("content") or "")
    assert "".join(chunks) == text
    for xargs, param in [({"window": 8}, "window"), ({"gamma": 2}, "gamma"),
                         ({"gen_length": True}, "gen_length"),
                         ({"schedule": "dream", "alg": "maskgit"}, "alg"),
                         ({"schedule": "dream", "eps": 1.5}, "eps"),
                         ({"schedule": "dream", "alg_temp": -1}, "alg_temp")]:
        bad = requests.post(dream_server + "/v1/chat/completions",
                            json={**body, "vllm_xargs": xargs}, timeout=60)
        assert bad.status_code == 400 and param in bad.json()["error"]["message"], bad.text
    # top_p is Dream's own knob under its schedule, refused under the others.
    sampled = {**body, "temperature": 0.7, "seed": 1, "top_p": 0.9}
    assert requests.post(dream_server + "/v1/chat/completions", json=sampled,
                         timeout=60).status_code == 400
    dream = {**sampled, "vllm_xargs": {"schedule": "dream", "steps": 16, "alg": "entropy"}}
    r = requests.post(dream_server + "/v1/chat/completions", json=dream, timeout=120)
    assert r.status_code == 200, r.text
    assert requests.post(dream_server + "/v1/chat/completions", json=body,
                         timeout=120).status_code == 200


TP_CASES = [dict(BLOCKS), dict(WINDOW, temperature=0.8, seed=3),
            dict(WINDOW, cache_policy="elastic", gamma=0.9),
            dict(BLOCKS, cache_policy="dual")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["mp", "ray"])
def test_dream_tp2_splits_kv_heads_and_equals_single_rank(backend, dream_llm, dream_model,
                                                          monkeypatch):
    """2 ranks, each with 2 of the 4 query heads and 1 of the 2 KV heads: tokens and
    accounting (Elastic-Cache's refresh decisions included) equal the single-rank engine's."""
    import gc

    from vllm import LLM

    def run(llm, case):
        outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sampling(case),
                            use_tqdm=False)
        return [(list(o.outputs[0].token_ids), o.kv_transfer_params) for o in outs]

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")  # one core per rank
    single = [run(dream_llm, c) for c in TP_CASES]
    tp = LLM(model=dream_model, dtype="float32", max_model_len=128, seed=0,
             tensor_parallel_size=2, distributed_executor_backend=backend)
    try:
        for case, want in zip(TP_CASES, single):
            assert run(tp, case) == want, case
    finally:
        del tp
        gc.collect()
