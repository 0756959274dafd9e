"""vllm.LLM with our plugin against the plain-PyTorch oracle, token for token.

One engine for the whole session (conftest's `llm`; engine start is ~35 s on this machine).
"""

from __future__ import annotations

import pytest
import torch

from helpers import MAX_MODEL_LEN, oracle, sampling

PROMPTS = [
    [2, 3, 100, 4],
    [2, 3, 120, 121, 122, 123, 124, 125, 126, 5, 3, 130, 4],
    [2, 3, 200, 201, 202, 4, 7, 8],
    [2] + list(range(30, 60)) + [4],
]




def test_model_logits_match_reference(llm, reference):
    ids = PROMPTS[1] + [1] * 16
    ours = torch.as_tensor(llm.collective_rpc("canvas_logits", args=(ids,))[0])
    theirs = reference(torch.tensor([ids]))[0]
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


CASES = [
    dict(gen_length=32, block_length=8),                      # blocks < gen, one token/step
    dict(gen_length=32, block_length=32, steps=16),           # one block, two tokens/step
    dict(gen_length=32, block_length=16, steps=8, remasking="random"),
    dict(gen_length=32, block_length=8, temperature=0.7, seed=11),
    dict(gen_length=32, block_length=16, steps=16, temperature=1.0, seed=3,
         remasking="random"),
    dict(gen_length=32, block_length=8, threshold=0.2),       # Fast-dLLM parallel decoding
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_batch_of_prompts_matches_reference(llm, reference, case):
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sampling(case),
                        use_tqdm=False)
    for prompt, out in zip(PROMPTS, outs):
        assert list(out.outputs[0].token_ids) == oracle(reference, prompt, **dict(case))


def test_mixed_parameters_in_one_batch(llm, reference):
    """Different prompts, gen lengths and decoding parameters share the engine's steps."""
    cases = [dict(gen_length=16, block_length=8), dict(gen_length=48, block_length=16,
             steps=24), dict(gen_length=32, block_length=32, threshold=0.1),
             dict(gen_length=24, block_length=8, temperature=0.9, seed=4, remasking="random")]
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                        [sampling(c) for c in cases], use_tqdm=False)
    for prompt, case, out in zip(PROMPTS, cases, outs):
        assert list(out.outputs[0].token_ids) == oracle(reference, prompt, **case)


def test_eos_stops_and_length_caps(llm, reference):
    """Output is cut at the first EOS (finish_reason stop), max_tokens caps it (length)."""
    case = dict(gen_length=64, block_length=8)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sampling(**case),
                        use_tqdm=False)
    reasons = {o.outputs[0].finish_reason for o in outs}
    assert "stop" in reasons, "the EOS-boosted test model should stop early on some prompt"
    for out in outs:
        ids = out.outputs[0].token_ids
        if out.outputs[0].finish_reason == "stop":
            assert ids[-1] == reference.config.eos_token_id and ids.count(0) == 1
    capped = llm.generate([{"prompt_token_ids": PROMPTS[0]}], sampling(max_tokens=5, **case),
                          use_tqdm=False)[0].outputs[0]
    assert list(capped.token_ids) == oracle(reference, PROMPTS[0], max_tokens=5, **case)
    assert len(capped.token_ids) <= 5


def test_seeded_sampling_is_reproducible(llm):
    case = dict(gen_length=16, block_length=8, temperature=1.0, seed=123)
    first = llm.generate([{"prompt_token_ids": PROMPTS[2]}], sampling(case),
                         use_tqdm=False)[0].outputs[0].token_ids
    again = llm.generate([{"prompt_token_ids": PROMPTS[2]}], sampling(case),
                         use_tqdm=False)[0].outputs[0].token_ids
    assert list(first) == list(again)


@pytest.mark.parametrize("bad, param", [
    (dict(gen_length=30, block_length=8), "gen_length"),
    (dict(gen_length=32, block_length=8, steps=6), "steps"),
    (dict(remasking="nope"), "remasking"),
    (dict(gen_length=MAX_MODEL_LEN, block_length=8), "prompt"),
])
def test_bad_requests_raise_naming_the_parameter_and_engine_survives(llm, reference, bad, param):
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError) as e:
        llm.generate([{"prompt_token_ids": PROMPTS[0]}], sampling(**bad), use_tqdm=False)
    assert e.value.parameter == param and param in str(e.value)
    ok = llm.generate([{"prompt_token_ids": PROMPTS[0]}], sampling(gen_length=8, block_length=8),
                      use_tqdm=False)[0].outputs[0].token_ids
    assert list(ok) == oracle(reference, PROMPTS[0], gen_length=8, block_length=8)


def test_unsupported_sampling_option_is_rejected(llm):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="top_p"):
        llm.generate([{"prompt_token_ids": PROMPTS[0]}], SamplingParams(top_p=0.5),
                     use_tqdm=False)


def test_offline_batch_script_reports_bad_lines_and_resumes(llm, reference, tmp_path):
    """examples/offline_batch.py: input order kept, malformed lines reported with their line
    numbers while the rest run, and a rerun does not redo finished lines."""
    import importlib.util
    import json
    import pathlib

    script = pathlib.Path(__file__).parents[1] / "examples" / "offline_batch.py"
    spec = importlib.util.spec_from_file_location("offline_batch", script)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)

    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": "a", "prompt": "The quick brown fox"}), "{not json",
             json.dumps({"id": "c", "prompt": "hi", "gen_length": 30}),
             json.dumps({"id": "d", "messages": [{"role": "user", "content": "Hello"}]})]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    args = batch.parse_args([str(src), str(out), "--gen-length", "16", "--block-length", "8",
                             "--chunk", "2"])
    rows = batch.process(args, llm)
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert "line 2" in rows[1]["error"] and "gen_length" in rows[2]["error"]
    tok = llm.get_tokenizer()
    ids = tok("The quick brown fox")["input_ids"]
    want = oracle(reference, ids, gen_length=16, block_length=8)
    assert rows[0]["token_ids"] == want and rows[3]["finish_reason"] in ("stop", "length")

    # Resume: drop the last result as if the run had been interrupted; only it is redone.
    out.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    counting = CountingLLM(llm)
    assert batch.process(args, counting) == rows
    assert counting.prompts == 1


class CountingLLM:
    """Counts the prompts that reach the engine."""

    def __init__(self, llm):
        self.llm, self.prompts, self.llm_engine = llm, 0, llm.llm_engine

    def generate(self, prompts, params, **kwargs):
        self.prompts += len(prompts)
        return self.llm.generate(prompts, params, **kwargs)

    def get_tokenizer(self):
        return self.llm.get_tokenizer()


def arm_fault(worker, armed: bool) -> None:
    """Runs inside the worker (collective_rpc): the next request admitted raises in its
    `Canvas.step`; every other request is left alone. Disarming restores the runner."""
    runner = worker.model_runner
    admit = runner.__dict__.get("_unfaulted_admit", runner._admit)
    runner._unfaulted_admit = admit
    if not armed:
        runner._admit = admit
        return

    def admit_once(new):
        state = admit(new)
        runner._admit = admit  # only this request

        def step(logits):
            raise RuntimeError("injected fault")

        state.canvas.step = step
        return state

    runner._admit = admit_once


def test_a_failing_request_errors_alone_and_the_engine_keeps_serving(llm, reference):
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    llm.collective_rpc(arm_fault, args=(True,))
    try:
        case = dict(gen_length=16, block_length=8)
        # Requests are admitted in order: the first one fails, the second must not notice.
        outs = llm.generate([{"prompt_token_ids": PROMPTS[1]}, {"prompt_token_ids": PROMPTS[0]}],
                            sampling(case), use_tqdm=False)
        assert outs[0].outputs[0].finish_reason == "error"
        assert list(outs[1].outputs[0].token_ids) == oracle(reference, PROMPTS[0], **case)
    finally:
        llm.collective_rpc(arm_fault, args=(False,))
    again = llm.generate([{"prompt_token_ids": PROMPTS[0]}], sampling(case),
                         use_tqdm=False)[0]
    assert list(again.outputs[0].token_ids) == oracle(reference, PROMPTS[0], **case)


def model_threads(worker) -> tuple[int, str | None]:
    """Runs inside the worker: (torch threads, the OpenMP thread count vLLM's binding set)."""
    import os

    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_a_single_rank_on_a_small_cpu_machine_computes_on_every_core(llm):
    """The plugin's CPU default (integration/cpu_threads.py): vLLM alone would bind the model
    to one of this machine's 2 cores and reserve the other for the engine core."""
    import sys

    import cloudpickle

    from vllm_elastic.integration.cpu_threads import SMALL_MACHINE_CPUS, usable_cpus

    if usable_cpus() > SMALL_MACHINE_CPUS:
        pytest.skip("vLLM's own binding applies on a larger machine")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert llm.collective_rpc(model_threads) == [(usable_cpus(), str(usable_cpus()))]
