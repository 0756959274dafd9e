"""Cache policies inside vLLM: each one's exact setting equals full recompute under the same
schedule (mixed policies and prompt lengths in one batch), the approximate settings run and
account for what they computed."""

from __future__ import annotations

import pytest

from helpers import oracle, sampling

PROMPTS = [
    [2, 3, 100, 4],
    [2, 3, 120, 121, 122, 123, 124, 125, 126, 5, 3, 130, 4],
    [2, 3, 200, 201, 202, 4, 7, 8],
    [2] + list(range(30, 60)) + [4],
]
BLOCKS = dict(gen_length=32, block_length=8)
WINDOW = dict(gen_length=32, schedule="window", window_length=8, threshold=0.3)




EXACT = [
    dict(BLOCKS, cache_policy="prefix", refresh_interval=1),
    dict(BLOCKS, cache_policy="dual", refresh_interval=1),
    dict(BLOCKS, cache_policy="elastic", full_update=True),
    dict(WINDOW, cache_policy="elastic", full_update=True),
    dict(WINDOW, cache_policy="elastic", refresh_interval=1, gamma=0.0),
    dict(WINDOW, cache_policy="prefix", refresh_interval=1),
    dict(WINDOW, cache_policy="dual", refresh_interval=1, temperature=0.8, seed=5),
    dict(WINDOW, cache_policy="none"),
    dict(BLOCKS, cache_policy="elastic", full_update=True, steps=16, remasking="random"),
    dict(WINDOW, cache_policy="elastic", gamma=0.0, guard=True, guard_bound=0.0),
    dict(BLOCKS, cache_policy="elastic", guard=True, guard_bound=0.0, guard_sentinels=3,
         temperature=0.7, seed=11),
    # A band wider than any canvas here (prompt <= 32 + 32 answer): every position, every step.
    dict(WINDOW, cache_policy="elastic", refresh_band=64),
    # No statistics at all (track_num 0), a full step every step.
    dict(WINDOW, cache_policy="elastic", gamma=0.0, track_num=0, refresh_interval=1),
]


def test_exact_settings_match_full_recompute_in_one_mixed_batch(llm, reference):
    jobs = [(p, c) for c in EXACT for p in PROMPTS[:2]] + [(PROMPTS[2], EXACT[3]),
                                                           (PROMPTS[3], EXACT[0])]
    outs = llm.generate([{"prompt_token_ids": p} for p, _ in jobs],
                        [sampling(c) for _, c in jobs], use_tqdm=False)
    for (prompt, case), out in zip(jobs, outs):
        assert list(out.outputs[0].token_ids) == oracle(reference, prompt, case), case


@pytest.mark.parametrize("case", [
    dict(BLOCKS, cache_policy="prefix"), dict(BLOCKS, cache_policy="dual"),
    dict(WINDOW, cache_policy="prefix"), dict(WINDOW, cache_policy="dual"),
    dict(WINDOW, cache_policy="elastic", gamma=0.9),
], ids=lambda c: f"{c.get('schedule', 'blocks')}-{c['cache_policy']}")
def test_approximate_policies_compute_less_and_report_it(llm, reference, case):
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sampling(case),
                        use_tqdm=False)
    for out in outs:
        ids = out.outputs[0].token_ids
        assert ids and reference.config.mask_token_id not in ids
        acct = out.kv_transfer_params["diffusion"]
        assert 0 < acct["token_layer_evals"] <= acct["token_layer_evals_full"]
        assert len(acct["refreshes_per_layer"]) == reference.config.n_layers
        assert all(1 <= n <= acct["steps"] for n in acct["refreshes_per_layer"])
    assert any(o.kv_transfer_params["diffusion"]["work_fraction"] < 1 for o in outs)


def test_elastic_gamma_sets_how_often_deeper_layers_refresh(llm):
    """gamma=0 never refreshes after step 0 (similarity is never negative); gamma=1 refreshes
    every layer after the first at every step; layer 0 is refreshed only at step 0 (the
    paper's behaviour: a trigger at layer l refreshes l+1..L-1)."""
    never, always = (llm.generate([{"prompt_token_ids": PROMPTS[1]}],
                                  sampling(dict(WINDOW, cache_policy="elastic", gamma=g)),
                                  use_tqdm=False)[0].kv_transfer_params["diffusion"]
                     for g in (0.0, 1.0))
    assert never["refreshes_per_layer"] == [1, 1]
    assert always["refreshes_per_layer"] == [1, always["steps"]]
    assert never["work_fraction"] < always["work_fraction"] <= 1


def test_elastic_refresh_interval_runs_a_full_step_every_n_steps(llm):
    """Beyond the paper: with refresh_interval=2 and a drift test that never fires (gamma=0),
    steps 0, 2, 4, ... run every layer over the whole canvas, the others only the query set
    (one token per step, so the request takes several steps)."""
    acct = llm.generate([{"prompt_token_ids": PROMPTS[1]}],
                        sampling(dict(WINDOW, threshold=None, cache_policy="elastic",
                                      gamma=0.0, refresh_interval=2)),
                        use_tqdm=False)[0].kv_transfer_params["diffusion"]
    assert acct["steps"] >= 3
    full_steps = (acct["steps"] + 1) // 2
    assert acct["refreshes_per_layer"] == [full_steps, full_steps]
    assert acct["work_fraction"] < 1


def test_bad_policy_parameters_are_rejected(llm):
    from vllm.exceptions import VLLMValidationError

    for bad, param in [({"cache_policy": "lru"}, "cache_policy"), ({"gamma": 1.5}, "gamma"),
                       ({"schedule": "diagonal"}, "schedule"), ({"window_length": 0},
                                                               "window_length"),
                       ({"drift_min_weight": 2}, "drift_min_weight"),
                       ({"cache_policy": "elastic", "guard": "yes"}, "guard"),
                       ({"cache_policy": "elastic", "guard": True, "guard_bound": -0.1},
                        "guard_bound"),
                       ({"cache_policy": "elastic", "guard_bound": 0.1}, "guard_bound"),
                       ({"cache_policy": "elastic", "guard": True, "guard_sentinels": 0},
                        "guard_sentinels"),
                       ({"cache_policy": "dual", "guard": True}, "guard")]:
        with pytest.raises(VLLMValidationError) as e:
            llm.generate([{"prompt_token_ids": PROMPTS[0]}], sampling(bad), use_tqdm=False)
        assert e.value.parameter == param


def test_mixed_batch_equals_each_request_alone(llm):
    """Continuous batching: requests with different policies, schedules, prompt and gen
    lengths share every forward pass, and each gets the tokens it gets alone."""
    jobs = [(PROMPTS[0], dict(WINDOW, cache_policy="elastic", gamma=0.9)),
            (PROMPTS[1], dict(BLOCKS, cache_policy="dual")),
            (PROMPTS[2], dict(WINDOW, cache_policy="prefix", gen_length=48)),
            (PROMPTS[3], dict(BLOCKS, cache_policy="none", gen_length=16)),
            (PROMPTS[1], dict(WINDOW, cache_policy="elastic", gamma=0.99, track_num=2)),
            (PROMPTS[2], dict(WINDOW, cache_policy="elastic", gamma=0.9, drift_min_weight=1e-6)),
            (PROMPTS[3], dict(WINDOW, cache_policy="elastic", gamma=0.0, guard=True,
                              guard_bound=0.05, guard_sentinels=4))]
    together = llm.generate([{"prompt_token_ids": p} for p, _ in jobs],
                            [sampling(c) for _, c in jobs], use_tqdm=False)
    for (prompt, case), out in zip(jobs, together):
        alone = llm.generate([{"prompt_token_ids": prompt}], sampling(case), use_tqdm=False)[0]
        assert out.outputs[0].token_ids == alone.outputs[0].token_ids, case
        assert out.kv_transfer_params == alone.kv_transfer_params


def test_refresh_layers_all_and_trigger_are_exact_when_layer_0_always_triggers(llm, reference):
    """Beyond the paper: a trigger at layer l recomputes layers 0..l (`all`) or l.. (`trigger`)
    before going on. With gamma=1 layer 0 triggers at every step, so both restart from layer 0
    and recompute every layer over every position from exact inputs (layer 0's input, the
    embedding, only changes for just-committed tokens, which are queried): each must equal
    full recompute and refresh both layers at every step. The paper's `after` at gamma=1
    never recomputes layer 0 after step 0 (its stale outputs stay): [1, steps]."""
    for mode in ("all", "trigger"):
        case = dict(WINDOW, cache_policy="elastic", gamma=1.0, refresh_layers=mode)
        outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sampling(case),
                            use_tqdm=False)
        for prompt, out in zip(PROMPTS, outs):
            assert list(out.outputs[0].token_ids) == oracle(reference, prompt, case), mode
            acct = out.kv_transfer_params["diffusion"]
            assert acct["refreshes_per_layer"] == [acct["steps"]] * 2, mode
    paper = dict(WINDOW, cache_policy="elastic", gamma=1.0, refresh_layers="after")
    for out in llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sampling(paper),
                            use_tqdm=False):
        acct = out.kv_transfer_params["diffusion"]
        assert acct["refreshes_per_layer"] == [1, acct["steps"]]


def test_staleness_guard_refreshes_by_its_bound_and_counts_its_sentinels(llm):
    """Beyond the paper: with the drift test off (gamma 0), the guard alone decides. A bound
    no change reaches never refreshes after step 0 (the paper's behaviour on a model whose
    drift test never fires); bound 0 refreshes every layer at every step (layer 0 runs twice: more work than full
    recompute); a bound between
    refreshes the last layer's input no less often than layer 0's output. Sentinel rows are
    counted: guard_sentinels rows through every layer of every partial step."""
    case = dict(WINDOW, threshold=None, cache_policy="elastic", gamma=0.0, guard=True,
                guard_sentinels=4)
    never, always, between = (
        llm.generate([{"prompt_token_ids": PROMPTS[1]}], sampling(case, guard_bound=b),
                     use_tqdm=False)[0].kv_transfer_params["diffusion"]
        for b in (1e9, 0.0, 0.4))
    assert never["steps"] >= 3 and never["refreshes_per_layer"] == [1, 1]
    assert never["token_layer_evals_sentinel"] == 4 * 2 * (never["steps"] - 1)
    assert always["refreshes_per_layer"] == [always["steps"]] * 2
    assert always["work_fraction"] > 1  # layer 0 runs the query rows, then reruns all
    assert between["refreshes_per_layer"][0] <= between["refreshes_per_layer"][1]
    assert never["work_fraction"] < between["work_fraction"] < always["work_fraction"]
