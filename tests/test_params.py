"""DiffusionParams: defaults, per-request overrides, and the errors that name the parameter."""

import pytest

from vllm_elastic.params import (DiffusionParamError, DiffusionParams, request_params,
                                 server_defaults)


def test_defaults_are_valid_and_one_token_per_step():
    p = DiffusionParams().validate()
    assert p.num_steps == p.gen_length and p.steps_per_block == p.block_length


@pytest.mark.parametrize("overrides, param", [
    ({"gen_length": 30, "block_length": 8}, "gen_length"),
    ({"gen_length": 32, "block_length": 8, "steps": 6}, "steps"),
    ({"remasking": "lowest"}, "remasking"),
    ({"temperature": -0.5}, "temperature"),
    ({"threshold": 1.5}, "threshold"),
    ({"gen_length": 0}, "gen_length"),
    ({"block_length": "x"}, "block_length"),
    ({"window": 3}, "window"),
    ({"drift_min_weight": 1.0}, "drift_min_weight"),
    ({"drift_min_weight": -1e-6}, "drift_min_weight"),
    ({"drift_min_weight": "tiny"}, "drift_min_weight"),
    ({"schedule": "dream", "alg": "maskgit"}, "alg"),
    ({"schedule": "dream", "eps": 0.0}, "eps"),
    ({"schedule": "dream", "alg_temp": -0.1}, "alg_temp"),
    ({"schedule": "dream", "steps": 0}, "steps"),
    ({"guard": "on"}, "guard"),
    ({"guard_bound": -0.01}, "guard_bound"),
    ({"guard_bound": float("inf")}, "guard_bound"),
    ({"guard_sentinels": 0}, "guard_sentinels"),
    ({"guard_sentinels": 2.5}, "guard_sentinels"),
    ({"refresh_band": -1}, "refresh_band"),
    ({"refresh_band": 1.5}, "refresh_band"),
    ({"track_num": -1}, "track_num"),
    ({"track_num": 0}, "track_num"),  # needs gamma 0: with gamma 0.9 no drift test can run
])
def test_bad_values_name_the_parameter(overrides, param):
    with pytest.raises(DiffusionParamError) as e:
        DiffusionParams().with_overrides(overrides)
    assert e.value.param == param
    assert param in str(e.value)


def test_request_overrides_server_defaults_and_coerces_json_numbers():
    defaults = server_defaults({"diffusion": {"gen_length": 64, "block_length": 16}})
    p = request_params(defaults, {"block_length": 32.0, "steps": "32"}, 0.5, 7)
    assert (p.gen_length, p.block_length, p.steps, p.temperature, p.seed) == (64, 32, 32, 0.5, 7)
    assert p.steps_per_block == 16
    assert request_params(defaults, {"cache_policy": "elastic", "drift_min_weight": "1e-6"},
                          0.0, None).drift_min_weight == 1e-6
    guarded = request_params(defaults, {"cache_policy": "elastic", "guard": 1,
                                        "guard_bound": "0.1", "guard_sentinels": 4.0}, 0.0, None)
    assert (guarded.guard, guarded.guard_bound, guarded.guard_sentinels) == (True, 0.1, 4)


@pytest.mark.parametrize("extra, param, field", [
    ({"window_length": 32}, "window_length", "schedule"),
    ({"schedule": "window", "block_length": 16}, "block_length", "schedule"),
    ({"schedule": "window", "threshold": 0.9, "steps": 8}, "steps", "schedule"),
    ({"alg": "entropy"}, "alg", "schedule"),
    ({"schedule": "dream", "threshold": 0.9}, "threshold", "schedule"),
    ({"cache_policy": "dual", "gamma": 0.5}, "gamma", "cache_policy"),
    ({"drift_min_weight": 1e-6}, "drift_min_weight", "cache_policy"),
    ({"refresh_interval": 2}, "refresh_interval", "cache_policy"),
    ({"guard": True}, "guard", "cache_policy"),
    ({"cache_policy": "elastic", "guard_bound": 0.1}, "guard_bound", "guard"),
    ({"cache_policy": "dual", "refresh_band": 8}, "refresh_band", "cache_policy"),
    ({"cache_policy": "elastic", "guard": False, "guard_sentinels": 4}, "guard_sentinels",
     "guard"),
])
def test_a_request_key_without_effect_on_the_request_is_refused(extra, param, field):
    """A request must not silently run without what it asked for: window_length under the
    default blocks schedule, gamma with a policy other than elastic, ..."""
    with pytest.raises(DiffusionParamError) as e:
        request_params(DiffusionParams(), extra, 0.0, None)
    assert e.value.param == param
    assert param in str(e.value) and field in str(e.value)


def test_server_defaults_may_hold_keys_for_other_requests():
    """A server default (here elastic's gamma) is not refused for requests it does not fit."""
    defaults = server_defaults({"diffusion": {"gamma": 0.95, "window_length": 32}})
    assert request_params(defaults, {"cache_policy": "dual"}, 0.0, None).gamma == 0.95
    p = request_params(defaults, {"schedule": "window", "cache_policy": "elastic",
                                  "threshold": 0.9}, 0.0, None)
    assert (p.gamma, p.window_length) == (0.95, 32)


@pytest.mark.parametrize("key", ["gen_lenght", "window", "unrelated"])
def test_unknown_request_keys_are_refused_naming_the_key_and_the_known_ones(key):
    """A typo in extra_args/vllm_xargs must not run the request with the default instead."""
    with pytest.raises(DiffusionParamError) as e:
        request_params(DiffusionParams(), {key: 64}, 0.0, None)
    assert e.value.param == key
    assert key in str(e.value) and "gen_length" in str(e.value) and "window_length" in str(e.value)


@pytest.mark.parametrize("key, value", [("gen_length", True), ("steps", False),
                                        ("window_length", True), ("gamma", True),
                                        ("threshold", True), ("temperature", True)])
def test_booleans_are_not_numbers(key, value):
    with pytest.raises(DiffusionParamError) as e:
        DiffusionParams().with_overrides({key: value})
    assert e.value.param == key


def test_unknown_server_default_is_rejected():
    with pytest.raises(DiffusionParamError, match="gen_lenght"):
        server_defaults({"diffusion": {"gen_lenght": 64}})


def test_page_layout_is_a_server_setting_that_refuses_elastic_when_kv_only():
    from vllm_elastic.params import check_policy_fits_pages, page_layout

    assert page_layout(None) == "full"
    kv_only = {"diffusion": {"page_layout": "kv", "gen_length": 64}}
    assert page_layout(kv_only) == "kv"
    assert server_defaults(kv_only).gen_length == 64  # not a per-request parameter
    with pytest.raises(DiffusionParamError) as e:
        page_layout({"diffusion": {"page_layout": "qk"}})
    assert e.value.param == "page_layout" and "['full', 'kv']" in str(e.value)
    with pytest.raises(DiffusionParamError) as e:
        server_defaults({"diffusion": {"page_layout": "kv", "cache_policy": "elastic"}})
    assert e.value.param == "cache_policy"
    with pytest.raises(DiffusionParamError, match="allowed here: \\['none', 'prefix', 'dual'\\]"):
        check_policy_fits_pages(DiffusionParams(cache_policy="elastic"), "kv")
    check_policy_fits_pages(DiffusionParams(cache_policy="dual"), "kv")


def test_offline_batch_script_knows_every_diffusion_parameter():
    """examples/offline_batch.py takes every per-request key as a flag or a JSONL field."""
    import importlib.util
    import pathlib

    from vllm_elastic.params import EXTRA_ARG_KEYS

    script = pathlib.Path(__file__).parents[1] / "examples" / "offline_batch.py"
    spec = importlib.util.spec_from_file_location("offline_batch", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.DIFFUSION_KEYS) == set(EXTRA_ARG_KEYS)
