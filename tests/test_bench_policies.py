"""benchmarks/bench_policies.py's per-request log: a budgeted or killed run resumes where it
stopped, a log of other weights is refused, and rows are summarized from the log's records."""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_policies  # noqa: E402

EOS = 0
HEADER = {"model_sha256": "abc", "task": "long"}


class ScriptedLLM:
    """Answers prompt [k] with `#### k` (tokens [k + 10, EOS]) and accounts 2 steps, layer 0
    refreshed once; counts the prompts it was asked."""

    def __init__(self):
        self.asked = []

    def generate(self, batch, sp, use_tqdm=False):
        outs = []
        for request in batch:
            k = request["prompt_token_ids"][0]
            self.asked.append(k)
            acct = {"steps": 2, "refreshes_per_layer": [1, 0], "token_layer_evals": 3,
                    "token_layer_evals_full": 4, "token_layer_evals_query": 2}
            outs.append(SimpleNamespace(
                outputs=[SimpleNamespace(text=f"#### {k}", token_ids=[k + 10, EOS])],
                kv_transfer_params={"diffusion": acct}))
        return outs


def problems(n):
    # Every other answer right: problem k's answer is k for even k.
    return [SimpleNamespace(question=f"q{k}", answer=k if k % 2 == 0 else -1) for k in range(n)]


def run(tmp_path, llm, n=4, resume=False, deadline=float("inf"), header=HEADER, extra=None):
    log = str(tmp_path / "out.requests.jsonl")
    done = bench_policies.load_requests(log, header, resume)
    requests = bench_policies.run_row(llm, "window/none", extra or {"threshold": 0.9}, 64,
                                      [[k] for k in range(n)], problems(n), 1, done, log,
                                      deadline)
    return requests, log


def test_a_killed_run_resumes_with_only_the_missing_requests(tmp_path):
    requests, log = run(tmp_path, ScriptedLLM())
    assert [r["index"] for r in requests] == [0, 1, 2, 3]
    with open(log) as f:
        lines = f.read().splitlines()
    assert json.loads(lines[0]) == HEADER and len(lines) == 5
    with open(log, "w") as f:  # as if killed after two requests
        f.write("\n".join(lines[:3]) + "\n")
    llm = ScriptedLLM()
    requests, _ = run(tmp_path, llm, resume=True)
    assert llm.asked == [2, 3]
    assert [r["text"] for r in requests] == ["#### 0", "#### 1", "#### 2", "#### 3"]
    llm = ScriptedLLM()
    run(tmp_path, llm, resume=True)
    assert llm.asked == []  # nothing left to run
    llm = ScriptedLLM()
    run(tmp_path, llm, resume=False)  # without --resume the log starts afresh
    assert llm.asked == [0, 1, 2, 3]


def test_a_deadline_stops_the_row_before_its_next_request(tmp_path):
    llm = ScriptedLLM()
    requests, log = run(tmp_path, llm, deadline=0.0)
    assert requests is None and llm.asked == []
    with open(log) as f:
        assert len(f.read().splitlines()) == 1  # the header only


def test_a_log_of_other_weights_or_parameters_is_refused(tmp_path):
    run(tmp_path, ScriptedLLM())
    with pytest.raises(SystemExit, match="model_sha256"):
        run(tmp_path, ScriptedLLM(), resume=True, header=dict(HEADER, model_sha256="def"))
    with pytest.raises(SystemExit, match="threshold"):
        run(tmp_path, ScriptedLLM(), resume=True, extra={"threshold": 0.8})


def test_rows_are_summarized_from_the_logged_requests(tmp_path):
    requests, _ = run(tmp_path, ScriptedLLM())
    for r in requests:
        r["seconds"] = 0.5
    row = bench_policies.summarize(requests, problems(4), EOS, bench_policies_extract)
    assert row["n"] == 4 and row["accuracy"] == 0.5
    assert row["tokens"] == 4 and row["tokens_per_s"] == 2.0  # one answer token each, 2 s
    assert row["steps_per_request"] == 2.0
    assert row["refresh_rate_per_layer"] == [0.5, 0.0]
    assert row["work_fraction"] == 0.75 and row["ratio_to_compute_bound"] == 1.5
    assert len(row["dates"]) == 1


def bench_policies_extract(text):
    return int(text.split("####")[1])


def test_weights_digest_reads_the_weight_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w1")
    (tmp_path / "config.json").write_text("{}")
    first = bench_policies.weights_digest(str(tmp_path))
    (tmp_path / "config.json").write_text('{"x": 1}')
    assert bench_policies.weights_digest(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"w2")
    assert bench_policies.weights_digest(str(tmp_path)) != first
