"""benchmarks/bench_width.py: its passes compute what they claim, and it writes its table."""

import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_width  # noqa: E402


def test_query_pass_equals_the_full_pass_rows():
    """A query pass over the last n rows, with the others' K/V cached, equals those rows of the
    full pass: the two columns time the same layer."""
    torch.manual_seed(0)
    b, length, d, heads, n = 2, 12, 32, 4, 3
    w = bench_width.layer_weights(d, heads, 64, "cpu", torch.float32)
    x = torch.randn(b, length, d)
    cache = (b, heads, length, d // heads)
    keys, values = torch.zeros(cache), torch.zeros(cache)
    full = bench_width.layer_pass(w, x, keys, values, heads)()
    part = bench_width.layer_pass(w, x[:, -n:].clone(), keys, values, heads)()
    torch.testing.assert_close(part, full[:, -n:], rtol=1e-5, atol=1e-5)


def test_statistics_score_unchanged_keys_as_no_drift():
    torch.manual_seed(0)
    b, length, d, heads = 2, 10, 16, 4
    q, keys = torch.randn(b, 6, d), torch.randn(b, heads, length, d // heads)
    out = bench_width.statistics(q, keys, q, keys, heads, window=4, tracked=2)()
    top, drift = out[:b], out[b:]
    torch.testing.assert_close(drift, torch.ones(b))
    moved = bench_width.statistics(q, keys, q, torch.randn_like(keys), heads, 4, 2)()[b:]
    assert (moved < 0.999).all()
    win = q[:, -4:].view(b, 4, heads, -1).transpose(1, 2)
    weights = F.softmax(win @ keys.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
    assert top.tolist() == weights.sum(dim=(1, 2)).argmax(-1).float().tolist()


def test_writes_markdown_and_json(tmp_path, monkeypatch):
    out = tmp_path / "width"
    monkeypatch.setattr(sys, "argv", ["bench_width.py", "--d-model", "32", "--heads", "4",
                                      "--mlp", "64", "--canvas", "32", "64", "--batch", "1",
                                      "2", "--query", "8", "--repeats", "1", "--out", str(out)])
    bench_width.main()
    rows = json.loads((tmp_path / "width.json").read_text())["rows"]
    assert [(r["batch"], r["canvas"]) for r in rows] == [(1, 32), (1, 64), (2, 32), (2, 64)]
    assert all(r["full_s"] > 0 and r["query_s"] > 0 and r["statistics_s"] > 0 for r in rows)
    assert "| 2 | 64 |" in (tmp_path / "width.md").read_text()
