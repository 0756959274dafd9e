"""The tune command: its calibration file is checked line by line before any engine starts,
its pick is the fastest candidate meeting the target, and a run on the shipped tiny model
(through vLLM's engine, in a subprocess as a user runs it) writes the table, the frontier, the
pick as `--additional-config` JSON, and resumes without an engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vllm_elastic.tools.tune.frontier import caution, frontier, meets, pick, wilson_interval
from vllm_elastic.tools.tune.prompts import PromptFileError, extract_answer, read_prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "examples", "models", "llada-tiny-arith")


@pytest.mark.parametrize("text, problem", [
    ("", "holds no prompts"),
    ("\n\n", "holds no prompts"),
    ('{"prompt": "a"}\n{"prompt": \n', "line 2: not JSON"),
    ('["a"]\n', "line 1: expected a JSON object"),
    ('{"prompt": "a", "answr": "1"}\n', "unknown key(s) ['answr']"),
    ('{"prompt": "a", "prompt_token_ids": [1]}\n', "exactly one of"),
    ('{"answer": "1"}\n', "exactly one of"),
    ('{"prompt_token_ids": [1, "x"]}\n', "prompt_token_ids must be"),
    ('{"messages": "hi"}\n', "messages must be"),
    ('{"prompt": "a", "answer": [1]}\n', "answer must be"),
])
def test_a_bad_calibration_file_is_refused_naming_the_line(tmp_path, tokenizer, text, problem):
    path = tmp_path / "calib.jsonl"
    path.write_text(text)
    with pytest.raises(PromptFileError) as e:
        read_prompts(str(path), tokenizer)
    assert problem in str(e.value)


def test_calibration_forms_and_answers(tmp_path, tokenizer):
    path = tmp_path / "calib.jsonl"
    path.write_text('{"prompt_token_ids": [5, 6], "answer": 12}\n\n'
                    '{"messages": [{"role": "user", "content": "hi"}]}\n{"prompt": "x y"}\n')
    items = read_prompts(str(path), tokenizer)
    assert [i.answer for i in items] == ["12", None, None]
    assert items[0].token_ids == [5, 6] and all(i.token_ids for i in items)
    assert extract_answer("so 3+4=7.\n#### 7") == "7"
    assert extract_answer("it is 1,234 apples") == "1234" and extract_answer("none") is None


def _row(name, agreement, speed, accuracy=None):
    return {"candidate": name, "agreement": agreement, "tokens_per_s": speed,
            "accuracy": accuracy}


def test_the_pick_is_the_fastest_row_meeting_the_target():
    rows = [_row("full", 1.0, 10, 0.80), _row("a", 0.97, 30, 0.70), _row("b", 0.96, 20, 0.80),
            _row("c", 0.90, 50, 0.85), _row("d", 0.99, 15, 0.79)]
    assert pick(rows, 0.95, None)["candidate"] == "a"
    assert pick(rows, 0.95, 0.01)["candidate"] == "b"  # a loses 10 points of accuracy
    assert pick(rows, 0.999, None)["candidate"] == "full"  # nothing else: full recompute
    assert not meets(rows[1], rows[0], 0.95, 0.05) and meets(rows[4], rows[0], 0.95, 0.01)
    assert {r["candidate"] for r in frontier(rows)} == {"full", "d", "a", "c"}


def test_agreement_intervals_and_the_caution_on_a_borderline_pick():
    low, high = wilson_interval(0.86, 50)
    assert 0.76 < low < 0.78 and 0.92 < high < 0.94  # Wilson 90%, by hand: 0.761-0.922
    assert wilson_interval(1.0, 200)[1] == 1.0 and wilson_interval(0.0, 10)[0] == 0.0
    borderline = dict(_row("a", 0.86, 30, 0.8), n=50)
    assert "76%-92%" in caution(borderline, 0.85)
    assert caution(dict(_row("b", 0.99, 30, 0.8), n=400), 0.85) is None
    assert caution(dict(_row("full", 1.0, 10, 0.8), n=5), 0.85) is None


def _tune(out, *more):
    config = {"diffusion": {"gen_length": 64, "schedule": "window", "window_length": 16,
                            "threshold": None}}
    return subprocess.run(
        [sys.executable, "-m", "vllm_elastic.tools.tune", TINY, "--prompts",
         str(out / "calib.jsonl"), "--min-agreement", "0.5", "--grid", "quick",
         "--additional-config", json.dumps(config), "--out", str(out / "tune"), *more],
        capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_tune_on_the_tiny_model_picks_prints_writes_and_resumes(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from calibration import calibration_problems

    with open(tmp_path / "calib.jsonl", "w") as f:
        for p in calibration_problems("arith", 4):
            f.write(json.dumps({"messages": [{"role": "user", "content": p.question}],
                                "answer": str(p.answer)}) + "\n")
    done = _tune(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    setting = json.loads(done.stdout.strip().splitlines()[-1])
    result = json.loads((tmp_path / "tune" / "tune.json").read_text())
    rows = {r["candidate"]: r for r in result["rows"]}
    assert set(rows) == {"full", "elastic/0.9", "guard/0.1"}
    assert rows["full"]["agreement"] == 1.0 and rows["full"]["accuracy"] is not None
    picked = rows[result["picked"]]
    assert picked["agreement"] >= 0.5
    assert picked["tokens_per_s"] == max(r["tokens_per_s"] for r in rows.values()
                                         if r["agreement"] >= 0.5)
    assert setting == {"diffusion": {"gen_length": 64, "schedule": "window",
                                     "window_length": 16, "threshold": None,
                                     **picked["params"]}}
    assert (tmp_path / "tune" / "tune.png").stat().st_size > 0
    report = (tmp_path / "tune" / "tune.md").read_text()
    assert "| candidate |" in report
    assert f"Command: `vllm-elastic tune {TINY} --prompts" in report and "Date: 20" in report
    again = _tune(tmp_path, "--resume")  # every request is in the log: no engine starts
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1]) == setting
    assert "request/s" not in again.stderr  # no progress bar: nothing ran


def test_tune_refuses_a_bad_grid_before_starting_an_engine(tmp_path):
    (tmp_path / "calib.jsonl").write_text('{"prompt_token_ids": [5, 6]}\n')
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"bad": {"cache_policy": "elastic", "gamma": 2}}))
    done = _tune(tmp_path, "--grid", str(grid))
    assert done.returncode != 0 and "parameter gamma" in done.stderr


def test_tune_reserves_only_the_kv_it_needs_on_cpu_and_names_its_dtype(monkeypatch):
    """vLLM's CPU default reserves 92% of memory for KV pages (a long tune filled 21 GiB and
    swapped): the tune sizes the reservation to its canvases unless the user set it."""
    import argparse

    from vllm_elastic.tools.tune import command

    args = argparse.Namespace(model=TINY, concurrency=4, dtype="auto")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    command._reserve_cpu_kv(args, 512)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"  # a tiny model: the 1 GiB floor
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    command._reserve_cpu_kv(args, 512)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"  # the user's own setting wins
    assert command._dtype(args).startswith("auto (the checkpoint's")
    assert command._dtype(argparse.Namespace(model=TINY, dtype="float32")) == "float32"
