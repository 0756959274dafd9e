"""The training script end to end on a tiny config: loss falls, resume is exact, export loads."""

import json
import os

import pytest
import torch

from vllm_elastic.oracles.llada import ReferenceLLaDA, generate
from vllm_elastic.params import DiffusionParams
from vllm_elastic.tools.checkpoint import build_tokenizer, tiny_config
from vllm_elastic.tools.training import (batches, data, evaluation, loop, masks, model_setup,
                                         objective, options)

TINY = ["--layers", "2", "--d-model", "64", "--heads", "2", "--mlp", "128", "--batch-size", "4",
        "--gen-length", "32", "--long-frac", "0.3", "--warmup", "2", "--no-progress",
        "--eval-n", "0", "--ckpt-minutes", "100", "--minutes", "100", "--seed", "1"]


def _args(tmp_path, name, max_steps, *extra):
    return options.parse_args(["--out", str(tmp_path / name / "out"),
                         "--state", str(tmp_path / name / "state" / "train_state.pt"),
                         "--max-steps", str(max_steps), *TINY, *extra])


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_batches_and_loss_fall():
    tok = build_tokenizer(data.tokenizer_corpus(300), 512)
    args = options.parse_args(["--out", "unused", *TINY])
    ids, plens, g, _kinds = batches.make_batch(args, tok, 0)
    assert torch.equal(ids, batches.make_batch(args, tok, 0)[0])  # a pure function of (seed, step)
    assert ids.shape[1] >= int(plens.max()) + g
    cfg = tiny_config(len(tok), 2, 64, 2, mlp=128)
    model = ReferenceLLaDA(cfg)
    model_setup.init_weights(model, 0)
    opt = model_setup.make_optimizer(model, 3e-3, 0.0)

    def loss_at(seed):
        with torch.no_grad():
            return float(objective.sft_loss(model, ids, plens, 1e-3, torch.Generator().manual_seed(seed)))

    before = sum(loss_at(s) for s in range(4))
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        loss = objective.sft_loss(model, ids, plens, 1e-3, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(loss_at(s) for s in range(4)) < 0.7 * before


def test_sft_loss_never_masks_prompt():
    ids = torch.arange(10, 30).reshape(2, 10)
    plens = torch.tensor([4, 6])
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return torch.zeros(*x.shape, 40)

    objective.sft_loss(Spy(), ids, plens, 1e-3, torch.Generator().manual_seed(0))
    x = seen["x"]
    assert torch.equal(x[0, :4], ids[0, :4]) and torch.equal(x[1, :6], ids[1, :6])


def test_resume_is_exact_and_export_loads(tmp_path):
    straight = loop.train(_args(tmp_path, "a", 6))
    loop.train(_args(tmp_path, "b", 3))  # "interrupted" after 3 steps
    resumed = loop.train(_args(tmp_path, "b", 6))  # same command, resumes from the state file
    assert straight["step"] == resumed["step"] == 6
    sa = torch.load(tmp_path / "a" / "state" / "train_state.pt", weights_only=False)
    sb = torch.load(tmp_path / "b" / "state" / "train_state.pt", weights_only=False)
    assert sb["step"] == 6
    for k, v in sa["model"].items():
        torch.testing.assert_close(sb["model"][k], v, rtol=0, atol=0)
    # the log has one train record per step interval, no duplicates after the resume
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "out" / "train_log.jsonl")]
    assert steps == sorted(set(steps))

    out = tmp_path / "b" / "out"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json"):
        assert (out / f).exists(), f
    assert json.load(open(out / "config.json"))["dtype"] == "bfloat16"
    model = ReferenceLLaDA.from_pretrained(str(out))
    tok = model_setup.load_tokenizer(str(out))
    assert model.config.n_layers == 2 and model.config.mask_token_id == 1
    for k, v in sb["model"].items():
        torch.testing.assert_close(model.state_dict()[k], v.to(torch.bfloat16).float())
    prompt = data.chat_prompt_ids(tok, data.test_problems(1)[0][0])
    canvas = generate(model, prompt, DiffusionParams(gen_length=32, block_length=32))
    assert len(canvas) == 32 and 1 not in canvas
    res = evaluation.evaluate(model, tok, 2, gen_length=32, block_length=32)
    assert res["n"] == 2 and 0.0 <= res["accuracy"] <= 1.0
    assert res["correct"] == len(res["correct_indices"]) and set(res["correct_indices"]) <= {0, 1}
    assert os.path.getsize(out / "model.safetensors") < 25e6


def test_weights_only_continuation_keeps_the_log_going(tmp_path):
    """--init-from: a later session continues from the committed checkpoint (bf16 weights and
    tokenizer, no optimizer state); steps, tokens and elapsed time go on in the same log."""
    loop.train(_args(tmp_path, "a", 3, "--log-every", "1"))
    out = str(tmp_path / "a" / "out")
    exported = ReferenceLLaDA.from_pretrained(out)
    args = _args(tmp_path, "b", 5, "--init-from", out, "--log-every", "1")
    args.out = out  # continue the same model folder and log
    loop.train(args)
    with open(os.path.join(out, "train_log.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if json.loads(line)["type"] == "train"]
    assert steps == sorted(steps) and steps[-1] == 5
    cont = ReferenceLLaDA.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(exported.state_dict().values(),
                                                     cont.state_dict().values()))


def test_weights_only_continuation_warms_up_its_fresh_optimizer():
    """A continuation starts a new Adam state, so its learning rate ramps up again from its own
    first step instead of jumping to the peak at a step count far past --warmup."""
    args = options.parse_args(["--out", "unused", "--minutes", "1", "--lr", "1e-3", "--warmup", "100",
                         "--decay-frac", "0.1"])
    assert objective.lr_at(args, 13_000, 0.5) == 1e-3                      # resumed or fresh: warm
    assert objective.lr_at(args, 13_000, 0.5, warmup_from=13_000) == 1e-3 / 100
    assert objective.lr_at(args, 13_049, 0.5, warmup_from=13_000) == 1e-3 * 50 / 100
    assert objective.lr_at(args, 13_099, 0.5, warmup_from=13_000) == 1e-3
    assert abs(objective.lr_at(args, 13_099, 0.95, warmup_from=13_000) - 1e-3 * 0.55) < 1e-12


def test_long_task_batches_fit_the_token_budget():
    tok = build_tokenizer(data.tokenizer_corpus(200), 512)
    args = options.parse_args(["--out", "unused", "--minutes", "1", "--task", "long", "--gen-length", "0",
                         "--batch-tokens", "2048", "--long-frac", "0.5",
                         "--long-gen-lengths", "320,512", "--long-weights", "0.5,0.5"])
    for step in range(6):
        ids, plens, g, _kinds = batches.make_batch(args, tok, step)
        assert torch.equal(ids, batches.make_batch(args, tok, step)[0])
        assert ids.shape[1] >= int(plens.max()) + g
        assert ids.shape[0] * ids.shape[1] <= 2048 or ids.shape[0] == 2


def test_long_task_curriculum_short_problems_then_full_length():
    """--short-start/--short-end: a share of 1-3 step problems that falls linearly from
    --curriculum-start over --curriculum-steps (a continued run starts its own curriculum)."""
    tok = build_tokenizer(data.tokenizer_corpus(200), 512)
    args = options.parse_args(["--out", "unused", "--minutes", "1", "--task", "long", "--gen-length", "0",
                         "--batch-tokens", "100000", "--long-frac", "0", "--short-start", "1",
                         "--short-end", "0", "--curriculum-start", "100",
                         "--curriculum-steps", "50"])
    days = lambda ids, p: tok.decode(ids[p:]).count("Day ") + tok.decode(ids[p:]).count("Minute ")
    early_ids, early_p, _, _ = batches.make_batch(args, tok, 100)
    late_ids, late_p, _, _ = batches.make_batch(args, tok, 150)
    assert max(days(r.tolist(), int(p)) for r, p in zip(early_ids, early_p)) <= 3
    assert max(days(r.tolist(), int(p)) for r, p in zip(late_ids, late_p)) >= 4


def test_prompt_masking_share_of_rows():
    """--prompt-mask-frac: those rows get prompt length 0 (every token may be masked)."""
    args = options.parse_args(["--out", "unused", "--minutes", "1", "--prompt-mask-frac", "0.5"])
    plens = torch.full((400,), 7)
    out = batches.prompt_masking(args, plens, 3)
    assert torch.equal(out, batches.prompt_masking(args, plens, 3))
    assert set(out.tolist()) == {0, 7} and 150 < int((out == 0).sum()) < 250
    none = options.parse_args(["--out", "unused", "--minutes", "1"])
    assert torch.equal(batches.prompt_masking(none, plens, 3), plens)


def test_qk_scale_softens_attention_and_entropy_is_logged():
    """--init-qk-scale multiplies q/k projections (logits by its square): attention entropy,
    the collapse diagnostic evaluate() logs, rises; 1.0 leaves the model unchanged."""
    tok = build_tokenizer(data.tokenizer_corpus(200), 512)
    model = ReferenceLLaDA(tiny_config(len(tok), 2, 64, 2, mlp=128))
    model_setup.init_weights(model, 0)
    with torch.no_grad():  # sharpen attention first, as a collapsed model has it
        model_setup.scale_qk(model, 8.0)
    ids = torch.tensor([data.chat_prompt_ids(tok, data.test_problems(1)[0][0])])
    before = model_setup.attention_entropy(model, ids)
    same = {k: v.clone() for k, v in model.state_dict().items()}
    model_setup.scale_qk(model, 1.0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in same.items())
    model_setup.scale_qk(model, 0.25)
    after = model_setup.attention_entropy(model, ids)
    assert len(before) == 2 and all(a > b for a, b in zip(after, before))
    res = evaluation.evaluate(model, tok, 1, gen_length=32, block_length=32)
    assert len(res["attention_entropy"]) == 2


def test_frontier_masks_match_left_to_right_decoding():
    """--frontier-frac rows: visible before a cut inside the answer (its EOS included), the
    cut masked and scored, a window after it masked at the row's rate and scored, everything
    beyond masked and not scored; the prompt never masked."""
    ids = torch.tensor([[5] * 6 + [9] * 10 + [0] * 24, [5] * 4 + [9] * 30 + [0] * 6])
    plens = torch.tensor([6, 4])
    p = torch.full(ids.shape, 0.5)
    for seed in range(20):
        masked, scored = masks.frontier_masks(ids, plens, p, 8, torch.Generator().manual_seed(seed))
        for r in range(2):
            cut = int(masked[r].nonzero()[0])
            answer_end = int(plens[r]) + (10 if r == 0 else 30)  # the answer's EOS
            assert int(plens[r]) <= cut <= answer_end
            assert bool(scored[r, cut]) and not masked[r, :cut].any()
            assert masked[r, cut + 8:].all() and not scored[r, cut + 8:].any()
            assert torch.equal(scored[r, cut: cut + 8], masked[r, cut: cut + 8])


def test_frontier_full_window_masks_the_whole_window_in_a_share_of_rows():
    """--frontier-full-window: at 0 the masks (and the random stream) are the rate-t ones; at 1
    every row masks and scores its whole window; in between, a share of the rows does."""
    ids = torch.tensor([[5] * 6 + [9] * 30 + [0] * 4] * 400)
    plens = torch.tensor([6] * 400)
    p = torch.full(ids.shape, 0.2)

    def window_masks(full: float) -> tuple[torch.Tensor, torch.Tensor]:
        return masks.frontier_masks(ids, plens, p, 8, torch.Generator().manual_seed(0), None, full)

    rate_t = masks.frontier_masks(ids, plens, p, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(window_masks(0.0), rate_t))
    cut = window_masks(1.0)[0].int().argmax(1)
    window = ((torch.arange(40)[None, :] >= cut[:, None])
              & (torch.arange(40)[None, :] < cut[:, None] + 8))
    masked, scored = window_masks(1.0)
    assert torch.equal(scored, window)
    assert torch.equal(masked, torch.arange(40)[None, :] >= cut[:, None])
    half = window_masks(0.5)[1]
    whole = (half == window).all(1) & (half.sum(1) == window.sum(1))
    assert 150 < int(whole.sum()) < 260  # ~200 full rows; a rate-0.2 row rarely masks all 8


def test_frontier_rows_share_and_loss():
    """A --frontier-frac share of rows (never prompt-masked ones) is trained at a frontier;
    without the flag the loss and its random stream are exactly LLaDA's."""
    tok = build_tokenizer(data.tokenizer_corpus(200), 512)
    args = options.parse_args(["--out", "unused", "--minutes", "1", "--frontier-frac", "0.5"])
    plens = torch.tensor([7] * 300 + [0] * 100)
    rows = masks.frontier_rows(args, plens, 3)
    assert torch.equal(rows, masks.frontier_rows(args, plens, 3))
    assert not rows[300:].any() and 100 < int(rows.sum()) < 200
    assert masks.frontier_rows(options.parse_args(["--out", "unused", "--minutes", "1"]), plens, 3) is None
    model = ReferenceLLaDA(tiny_config(len(tok), 2, 64, 2, mlp=128))
    model_setup.init_weights(model, 0)
    ids, plens, _, _kinds = batches.make_batch(options.parse_args(["--out", "unused", *TINY]), tok, 0)
    with torch.no_grad():
        plain = objective.sft_loss(model, ids, plens, 1e-3, torch.Generator().manual_seed(0))
        none = objective.sft_loss(model, ids, plens, 1e-3, torch.Generator().manual_seed(0),
                          torch.zeros(len(ids), dtype=torch.bool))
        front = objective.sft_loss(model, ids, plens, 1e-3, torch.Generator().manual_seed(0),
                           torch.ones(len(ids), dtype=torch.bool), 8)
    assert torch.equal(plain, none) and torch.isfinite(front) and float(front) > 0
    acc = evaluation.frontier_result_accuracy(model, tok, "arith", n=3)
    assert 0.0 <= acc <= 1.0
