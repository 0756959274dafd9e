"""Cache policies' decisions in isolation (no model): which positions run, when layers refresh."""

import torch

from vllm_elastic.cache import LayerStats, make_policy
from vllm_elastic.cache.guard import StalenessGuard
from vllm_elastic.decoding.canvas import Canvas
from vllm_elastic.params import DiffusionParams

MASK = 1


def canvas(**kw):
    return Canvas([2, 3, 4, 5], DiffusionParams(**kw), MASK, eos_id=0)


def test_prefix_and_dual_refresh_at_block_start_and_run_the_block_otherwise():
    c = canvas(gen_length=16, block_length=8)
    prefix = make_policy(DiffusionParams(gen_length=16, block_length=8, cache_policy="prefix"), 2)
    dual = make_policy(DiffusionParams(gen_length=16, block_length=8, cache_policy="dual"), 2)
    assert prefix.begin_step(c).tolist() == list(range(20))  # first step: full
    assert dual.begin_step(c).tolist() == list(range(20))
    c.tokens[4] = 7  # a commit inside block 0
    assert prefix.begin_step(c).tolist() == list(range(4, 20))  # block + suffix
    assert dual.begin_step(c).tolist() == list(range(4, 12))  # block only
    c.schedule.block = 1  # next block: refresh again
    assert dual.begin_step(c).tolist() == list(range(20))


def test_dual_under_the_window_runs_the_chunk_stretched_to_the_window_end():
    """Tokens the window commits past the chunk are recomputed (their cached K/V would be
    their MASK's otherwise) until the chunk changes."""
    params = dict(gen_length=16, schedule="window", window_length=4)
    c = canvas(**params)
    dual = make_policy(DiffusionParams(**params, cache_policy="dual"), 2)
    assert dual.begin_step(c).tolist() == list(range(20))  # chunk [4, 8): refresh
    c.tokens[[5, 6, 7]] = 7  # the chunk's position 4 stays masked; the window is now 4, 8-10
    c.last_committed = torch.tensor([5, 6, 7])
    assert dual.begin_step(c).tolist() == list(range(4, 11))
    c.tokens[[8, 9]] = 7  # committed past the chunk; window 4, 10-12
    c.last_committed = torch.tensor([8, 9])
    assert dual.begin_step(c).tolist() == list(range(4, 13))
    c.tokens[4] = 7  # the leftmost mask moves to chunk [8, 12): refresh
    assert dual.begin_step(c).tolist() == list(range(20))


def test_refresh_interval_one_refreshes_every_step():
    c = canvas(gen_length=16, block_length=8)
    p = make_policy(DiffusionParams(gen_length=16, block_length=8, cache_policy="dual",
                                    refresh_interval=1), 2)
    for _ in range(3):
        assert p.begin_step(c).numel() == c.length


def test_elastic_refresh_interval_runs_a_full_step_every_n_steps():
    params = DiffusionParams(gen_length=16, schedule="window", window_length=4,
                             cache_policy="elastic", gamma=0.0, refresh_interval=3)
    c = canvas(gen_length=16, schedule="window", window_length=4)
    e = make_policy(params, 2)
    full = []
    for _ in range(7):
        full.append(e.begin_step(c).numel() == c.length)
        assert e.in_update_mode(0) == full[-1] and e.in_update_mode(1) == full[-1]
        e.end_step(c)
    assert full == [True, False, False, True, False, False, True]


def test_elastic_queries_tracked_committed_and_window_then_refreshes_after_trigger():
    params = DiffusionParams(gen_length=16, schedule="window", window_length=4,
                             cache_policy="elastic", gamma=0.9)
    c = canvas(gen_length=16, schedule="window", window_length=4)
    e = make_policy(params, 4)
    assert e.begin_step(c).numel() == c.length  # step 0: everything, update mode
    assert all(e.in_update_mode(layer) for layer in range(4))
    mass = torch.zeros(c.length)
    mass[2] = 5.0  # prompt token 2 is the most attended
    mass[10] = 9.0  # but a still-masked key never is
    for layer in range(4):
        e.observe(layer, LayerStats(similarity=None, attention_mass=mass))
    c.tokens[4] = 9
    c.last_committed = torch.tensor([4])
    e.end_step(c)
    assert e.tracked.tolist() == [2]
    assert e.begin_step(c).tolist() == [2, 4, 5, 6, 7, 8]  # tracked, committed, window
    assert e.layer_plan(0).probe.tracked.tolist() == [2]  # reuse layer: drift test on tracked
    assert e.observe(0, LayerStats(similarity=0.95, attention_mass=None)) is None
    # Trigger at layer 1: the paper refreshes the layers after it, no restart.
    assert e.observe(1, LayerStats(similarity=0.5, attention_mass=None)) is None
    assert not e.layer_plan(1).widen and e.layer_plan(2).widen and not e.layer_plan(3).widen
    assert e.in_update_mode(2) and e.in_update_mode(3) and not e.in_update_mode(1)
    assert e.layer_plan(2).probe.tracked.numel() == 0  # no drift test in update mode
    assert all(e.layer_plan(layer).store_inputs for layer in range(4))


def test_elastic_restart_plans_follow_refresh_layers():
    """Beyond the paper: a trigger at layer 2 restarts from layer 2 (`trigger`) or 0 (`all`)."""
    for refresh_layers, start in (("after", None), ("trigger", 2), ("all", 0)):
        params = DiffusionParams(gen_length=16, schedule="window", window_length=4,
                                 cache_policy="elastic", refresh_layers=refresh_layers)
        c = canvas(gen_length=16, schedule="window", window_length=4)
        e = make_policy(params, 4)
        e.begin_step(c)
        e.end_step(c)
        e.begin_step(c)
        assert e.observe(2, LayerStats(similarity=0.1, attention_mass=None)) == start
        # Only the first trigger of a step counts.
        assert e.observe(3, LayerStats(similarity=0.1, attention_mass=None)) is None


def test_full_recompute_and_fast_dllm_caches_plan_nothing_per_layer():
    for policy in ("none", "prefix", "dual"):
        p = make_policy(DiffusionParams(gen_length=16, block_length=8, cache_policy=policy), 2)
        plan = p.layer_plan(1)
        assert not plan.store_inputs and not plan.widen and plan.probe is None


def test_guard_sentinels_spread_over_the_positions_outside_the_query_set_and_rotate():
    guard = StalenessGuard(bound=0.1, count=4)
    query = torch.tensor([0, 1, 2, 10, 11])
    picks = [guard.pick(20, query, step) for step in range(4)]
    for p in picks:
        assert p.numel() == 4 and bool((p.diff() > 0).all())
        assert not set(p.tolist()) & set(query.tolist())
    assert len({tuple(p.tolist()) for p in picks}) > 1  # the offset rotates
    assert guard.pick(3, torch.arange(3), 0).numel() == 0  # nothing outside the query set
    assert guard.pick(8, torch.tensor([0, 1, 2, 6, 7]), 0).tolist() == [3, 4, 5]  # fewer candidates than sentinels
    assert guard.fires(0.1) and not guard.fires(0.099) and guard.history == [0.1, 0.099]


def test_guard_trigger_restarts_at_the_stale_layer_and_later_layers_update():
    window = dict(gen_length=16, schedule="window", window_length=4)
    policy = make_policy(DiffusionParams(**window, cache_policy="elastic", gamma=0.0,
                                         guard=True, guard_bound=0.1, guard_sentinels=2), 4)
    c = canvas(**window)
    policy.begin_step(c)  # step 0: full
    policy.end_step(c)
    active = policy.begin_step(c)
    assert policy.sentinels.numel() == 2 and set(policy.sentinels.tolist()) <= set(active.tolist())
    assert policy.layer_plan(0).sentinels is not None
    assert policy.observe(0, LayerStats(staleness=0.05)) is None
    assert policy.observe(1, LayerStats(staleness=0.2)) == 1  # rerun layer 1, then update
    assert policy.layer_plan(2).sentinels is None and policy.in_update_mode(2)
    assert not policy.in_update_mode(1)
    assert policy.layer_plan(3).sentinels is None  # never after the last layer


def test_guard_trigger_with_refresh_layers_all_restarts_at_layer_0():
    window = dict(gen_length=16, schedule="window", window_length=4)
    policy = make_policy(DiffusionParams(**window, cache_policy="elastic", gamma=0.0,
                                         guard=True, guard_bound=0.1, refresh_layers="all"), 4)
    c = canvas(**window)
    policy.begin_step(c)
    policy.end_step(c)
    policy.begin_step(c)
    assert policy.observe(2, LayerStats(staleness=0.3)) == 0 and policy.in_update_mode(3)


def test_refresh_band_adds_the_windows_span_widened_on_each_side():
    kw = dict(gen_length=16, schedule="window", window_length=4)
    c = canvas(**kw)
    e = make_policy(DiffusionParams(**kw, cache_policy="elastic", refresh_band=2), 4)
    e.begin_step(c)
    e.end_step(c)
    c.tokens[4:10] = 9  # answer positions 4..9 decoded
    c.tokens[11] = 9  # one inside: the window is 10, 12, 13, 14
    c.last_committed = torch.empty(0, dtype=torch.long)
    assert e.begin_step(c).tolist() == list(range(8, 17))  # window span 10..14, widened by 2
    wide = make_policy(DiffusionParams(**kw, cache_policy="elastic", refresh_band=20), 4)
    wide.begin_step(c)
    wide.end_step(c)
    assert wide.begin_step(c).numel() == c.length  # a band covering the canvas: everything


def test_track_num_0_asks_for_no_statistics_and_tracks_nothing():
    kw = dict(gen_length=16, schedule="window", window_length=4)
    c = canvas(**kw)
    e = make_policy(DiffusionParams(**kw, cache_policy="elastic", gamma=0.0, track_num=0,
                                    refresh_band=1), 4)
    e.begin_step(c)
    assert all(e.layer_plan(layer).probe is None for layer in range(4))
    e.end_step(c)
    c.tokens[4:6] = 9  # two answer positions decoded: the window is 6..9
    c.last_committed = torch.empty(0, dtype=torch.long)
    assert e.begin_step(c).tolist() == list(range(5, 11))  # window 6..9 and its band, no tracked
    assert e.layer_plan(1).probe is None and e.tracked.numel() == 0
    tracked = make_policy(DiffusionParams(**kw, cache_policy="elastic", gamma=0.0), 4)
    tracked.begin_step(c)
    assert tracked.layer_plan(1).probe is not None  # gamma 0 alone still picks most-attended
