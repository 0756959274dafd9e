"""A bounded load test on the shared `vllm serve` (loopback): 64 concurrent requests with mixed
cache policies, schedules, lengths and sampling, plus 16 streaming clients that disconnect
after their first chunk. Every completed answer equals the same request run alone, none
fails, and the KV cache is empty again afterwards."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from helpers import metric, post, served_name, wait_until

PROMPTS = ["Once upon a time", "hi", "The quick brown fox jumps over the lazy dog and then",
           "1 2 3 4 5 6 7 8"]
CASES = [
    {"cache_policy": "none", "gen_length": 16, "block_length": 8},
    {"cache_policy": "prefix", "gen_length": 32, "block_length": 8},
    {"cache_policy": "dual", "gen_length": 48, "block_length": 16, "threshold": 0.5},
    {"cache_policy": "elastic", "schedule": "window", "window_length": 8, "threshold": 0.3,
     "gen_length": 40, "gamma": 0.9},
    {"cache_policy": "elastic", "schedule": "window", "window_length": 4, "gen_length": 24,
     "gamma": 0.99, "refresh_layers": "all"},
    {"cache_policy": "dual", "schedule": "window", "window_length": 8, "threshold": 0.3,
     "gen_length": 32},
    {"cache_policy": "none", "schedule": "window", "window_length": 8, "threshold": 0.3,
     "gen_length": 48},
    {"cache_policy": "prefix", "gen_length": 24, "block_length": 8, "steps": 12},
]


def _body(i: int) -> dict:
    """Request i of 16 distinct ones: a prompt, a case, greedy or seeded sampling."""
    body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 64,
            "vllm_xargs": CASES[i % len(CASES)]}
    if i % 3 == 2:
        body.update(temperature=0.8, seed=100 + i)
    return body


def _stream_and_leave(server: str, body: dict) -> bool:
    stream = {"model": served_name(server), "stream": True, **body}
    with requests.post(server + "/v1/completions", json=stream, stream=True, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                return True  # first chunk received: go away
    return False


def _answer(response) -> tuple:
    choice = response.json()["choices"][0]
    return choice["text"], choice["finish_reason"]


def test_64_concurrent_mixed_requests_and_16_disconnecting_streams(server):
    alone = {}
    for i in range(16):
        r = post(server, "/v1/completions", _body(i))
        assert r.status_code == 200, r.text
        alone[i] = _answer(r)
    long = {"prompt": "hi", "max_tokens": 96, "ignore_eos": True,
            "vllm_xargs": {"gen_length": 96, "block_length": 8}}
    with ThreadPoolExecutor(80) as pool:
        together = [(i % 16, pool.submit(post, server, "/v1/completions", _body(i % 16)))
                    for i in range(64)]
        leaving = [pool.submit(_stream_and_leave, server, long) for _ in range(16)]
        assert all(f.result() for f in leaving)
        for i, f in together:
            r = f.result()
            assert r.status_code == 200, r.text
            assert _answer(r) == alone[i], (i, _body(i))
    wait_until(lambda: metric(server, "vllm:num_requests_running") == 0
               and metric(server, "vllm:num_requests_waiting") == 0
               and metric(server, "vllm:kv_cache_usage_perc") == 0,
               timeout=60, what="every request finished or aborted and its KV blocks freed")
    assert post(server, "/v1/completions", _body(0)).status_code == 200
