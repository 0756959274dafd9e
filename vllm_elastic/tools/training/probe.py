"""Arithmetic probe of a long-task checkpoint: whole results right, by operation.

    python -m vllm_elastic.tools.training.probe examples/models/llada-long-arith --n 60
    python -m vllm_elastic.tools.training.probe examples/models/llada-long-arith --n 20 --tokens
    python -m vllm_elastic.tools.training.probe examples/models/llada-long-arith --n 20 --free 320
    python -m vllm_elastic.tools.training.probe examples/models/llada-long-arith --n 10 --lookahead 512

For every result of a held-out worked answer (`45+4=49`: the `49`), the true answer is shown up
to the result and everything from the result on is masked, as a left-to-right decoder sees it;
the result counts as right when the argmax at each of its digit positions is its digit. Grouped
by the operation before the `=` (`+`, `-`, `*`); the `#### N` line is not a computation and is
left out. Unlike evaluation.frontier_result_accuracy (digits, pooled), this asks for whole
results and says which table is missing.

`--tokens` asks the same of every answer token, one at a time (the true answer up to it, it and
everything after masked), grouped by problem kind and by what the token is: a `result` digit,
an `operand` digit (a copy: of the prompt's event, of the previous result, or a day/minute
number), `stop` (`####` or the answer's EOS: whether the model ends where the prompt says),
`newline`, or `word`. Exact match needs every one of them right; this says which kind of token
the model still gets wrong.

`--free G` decodes instead (left to right, greedy, the model's own tokens before each one) into
G masks, or with `--free 0` into an answer-sized canvas, and reports where each answer first
goes wrong: the probe closest to exact match.

`--lookahead G` asks what a threshold commits ahead of the frontier: at every `--stride`-th
answer position c, the true answer before c, a canvas of G masks from c on (what the window
schedule sees right after committing c - 1), and for the window's other positions (c+1 ..
c+31) the share the model predicts with confidence >= 0.9 (Elastic-Cache's threshold commits
them in the same step) and how many of those are wrong, by the true token's category. A wrong
look-ahead commit is an error left-to-right decoding would not have made: the parallel
decoder's own failure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402

from vllm_elastic.tools.checkpoint import MASK_ID  # noqa: E402
from vllm_elastic.params import DiffusionParams  # noqa: E402
from vllm_elastic.oracles.llada import ReferenceLLaDA, cut_at_eos, generate  # noqa: E402
from vllm_elastic.tools.training import data, long_data  # noqa: E402
from vllm_elastic.tools.training.masks import arith_tokens, result_digits, result_starts  # noqa: E402,E501
from vllm_elastic.tools.training.model_setup import load_tokenizer  # noqa: E402

OPERATIONS = {"+": "sum", "-": "difference", "*": "product"}


@torch.no_grad()
def results_by_operation(model: ReferenceLLaDA, tokenizer, n: int = 60) -> dict[str, list[int]]:
    """{"sum"|"difference"|"product": [right, total]} over the results of `n` held-out
    problems (long_data.test_problem_list)."""
    tokens = arith_tokens(tokenizer)
    ops = {i: OPERATIONS[t] for i in range(len(tokenizer))
           if (t := tokenizer.decode([i])) in OPERATIONS}
    tally = {name: [0, 0] for name in OPERATIONS.values()}
    for p in long_data.test_problem_list(n):
        prompt = data.chat_prompt_ids(tokenizer, p.question)
        ids = torch.tensor([prompt + data.answer_ids(tokenizer, p.solution)])
        plen = torch.tensor([len(prompt)])
        digits = result_digits(ids, plen, tokens)[0]
        starts = result_starts(ids, plen, tokens)[0].nonzero()[:, 0]
        cases = []
        for s in starts.tolist():
            if int(ids[0, s - 1]) != tokens.equals:
                continue  # the "#### N" line
            op = next(ops[t] for t in reversed(ids[0, :s - 1].tolist()) if t in ops)
            end = s
            while end < len(digits) and digits[end]:
                end += 1
            cases.append((s, end, op))
        if not cases:
            continue
        batch = ids.repeat(len(cases), 1)
        for r, (s, _, _) in enumerate(cases):
            batch[r, s:] = MASK_ID
        pred = model(batch).argmax(-1)
        for r, (s, end, op) in enumerate(cases):
            tally[op][0] += int(torch.equal(pred[r, s:end], ids[0, s:end]))
            tally[op][1] += 1
    return tally


def token_category(t: int, is_result: bool, tokens, eos: int) -> str:
    """What an answer token is: a `result` digit, an `operand` digit, `stop` (`####` or EOS),
    `newline` or `word`."""
    return ("result" if is_result else
            "operand" if bool(torch.isin(torch.tensor(t), tokens.digits)) else
            "stop" if t in (eos, tokens.hashes) else
            "newline" if t == tokens.newline else "word")


@torch.no_grad()
def first_slips(model: ReferenceLLaDA, tokenizer, n: int = 20, gen_length: int = 320
                ) -> dict:
    """Free left-to-right greedy decoding (the window schedule with a window of one token, so
    each token sees only the model's own earlier ones) of `n` held-out problems into a canvas
    of `gen_length` masks (0: the answer's own length plus 8, a canvas whose size gives the
    answer's end away), compared with the true answer at its first differing token.

    Returns exact matches, whole answer lines (newline included) before the first slip (mean),
    and the first slip's category: the true token's (token_category; so `stop` means the model
    went on where the answer ends), or `stop_early` where it wrote `####`/EOS and the answer
    goes on. Unlike --tokens, errors here compound: this is the probe closest to held-out exact
    match, and says what breaks first."""
    tokens = arith_tokens(tokenizer)
    eos = model.config.eos_token_id
    slips: dict[str, int] = {}
    exact, lines_right, by_kind = 0, [], {}
    for p in long_data.test_problem_list(n):
        prompt = data.chat_prompt_ids(tokenizer, p.question)
        answer = data.answer_ids(tokenizer, p.solution)
        g = gen_length or len(answer) + 8
        params = DiffusionParams(gen_length=g, schedule="window", window_length=1,
                                 threshold=None, tokens_per_iter=1)
        out = cut_at_eos(generate(model, prompt, params), eos)
        ids = torch.tensor([prompt + answer])
        results = result_digits(ids, torch.tensor([len(prompt)]), tokens)[0, len(prompt):]
        k = next((i for i, (a, b) in enumerate(zip(out, answer)) if a != b),
                 min(len(out), len(answer)))
        right = k == len(answer) == len(out)
        exact += right
        kind = by_kind.setdefault(p.template, [0, 0])
        kind[0] += right
        kind[1] += 1
        lines_right.append(answer[:k].count(tokens.newline))
        if not right:
            truth = answer[k] if k < len(answer) else eos
            category = ("stop_early" if k < len(out) and out[k] in (eos, tokens.hashes)
                        and truth not in (eos, tokens.hashes)
                        else token_category(truth, k < len(answer) and bool(results[k]),
                                            tokens, eos))
            slips[category] = slips.get(category, 0) + 1
    return {"gen_length": gen_length, "exact": exact, "by_kind": by_kind,
            "lines_right_mean": round(sum(lines_right) / max(1, len(lines_right)), 2),
            "first_slip": slips}


@torch.no_grad()
def tokens_by_category(model: ReferenceLLaDA, tokenizer, n: int = 20
                       ) -> dict[str, dict[str, list[int]]]:
    """{kind: {category: [right, total]}} over every answer token (EOS included) of `n`
    held-out problems, each predicted at a left-to-right frontier (see the module docstring)."""
    tokens = arith_tokens(tokenizer)
    eos = model.config.eos_token_id
    tally: dict[str, dict[str, list[int]]] = {}
    for p in long_data.test_problem_list(n):
        prompt = data.chat_prompt_ids(tokenizer, p.question)
        ids = torch.tensor([prompt + data.answer_ids(tokenizer, p.solution)])
        plen, length = len(prompt), ids.shape[1]
        results = result_digits(ids, torch.tensor([plen]), tokens)[0]
        batch = ids.repeat(length - plen, 1)
        for r in range(length - plen):
            batch[r, plen + r:] = MASK_ID
        pred = torch.cat([model(chunk).argmax(-1) for chunk in batch.split(64)])
        by_category = tally.setdefault(p.template, {})  # the kind
        for r in range(length - plen):
            c = plen + r
            t = int(ids[0, c])
            category = token_category(t, bool(results[c]), tokens, eos)
            right_total = by_category.setdefault(category, [0, 0])
            right_total[0] += int(pred[r, c]) == t
            right_total[1] += 1
    return tally


@torch.no_grad()
def lookahead_commits(model: ReferenceLLaDA, tokenizer, n: int = 10, gen_length: int = 512,
                      stride: int = 4, window: int = 32, threshold: float = 0.9) -> dict:
    """Threshold commits ahead of a left-to-right frontier on `n` held-out problems (see the
    module docstring): {"cuts", "ahead" (window positions after the cut), "commits" (of those
    at confidence >= threshold), "wrong" (commits that are not the true token),
    "wrong_by_category", "wrong_by_kind"}."""
    tokens = arith_tokens(tokenizer)
    eos = model.config.eos_token_id
    out = {"gen_length": gen_length, "stride": stride, "cuts": 0, "ahead": 0, "commits": 0,
           "wrong": 0, "wrong_by_category": {}, "wrong_by_kind": {}}
    for p in long_data.test_problem_list(n):
        prompt = data.chat_prompt_ids(tokenizer, p.question)
        answer = data.answer_ids(tokenizer, p.solution)
        truth = torch.tensor([prompt + answer + [eos] * (gen_length - len(answer))])
        plen = len(prompt)
        results = result_digits(truth, torch.tensor([plen]), tokens)[0]
        cuts = list(range(plen, plen + len(answer) + 1, stride))
        batch = truth.repeat(len(cuts), 1)
        for r, c in enumerate(cuts):
            batch[r, c:] = MASK_ID
        probs = torch.cat([model(chunk).softmax(-1) for chunk in batch.split(16)])
        conf, pred = probs.max(-1)
        out["cuts"] += len(cuts)
        for r, c in enumerate(cuts):
            ahead = range(c + 1, min(c + window, truth.shape[1]))
            out["ahead"] += len(ahead)
            for q in ahead:
                if conf[r, q] < threshold:
                    continue
                out["commits"] += 1
                t = int(truth[0, q])
                if int(pred[r, q]) != t:
                    out["wrong"] += 1
                    cat = token_category(t, bool(results[q]), tokens, eos)
                    out["wrong_by_category"][cat] = out["wrong_by_category"].get(cat, 0) + 1
                    out["wrong_by_kind"][p.template] = out["wrong_by_kind"].get(p.template, 0) + 1
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=60, help="held-out problems")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", action="store_true",
                    help="every answer token by kind and category instead of whole results")
    ap.add_argument("--free", type=int, default=None, metavar="GEN_LENGTH",
                    help="free left-to-right decoding into GEN_LENGTH masks (0: the answer's "
                         "length + 8) and where it first slips (see first_slips)")
    ap.add_argument("--lookahead", type=int, default=None, metavar="GEN_LENGTH",
                    help="threshold commits ahead of a left-to-right frontier in a canvas of "
                         "GEN_LENGTH masks, and how many are wrong (see lookahead_commits)")
    ap.add_argument("--stride", type=int, default=4, help="--lookahead: every stride-th cut")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = ReferenceLLaDA.from_pretrained(a.model).float().eval()
    tokenizer = load_tokenizer(a.model)
    if a.lookahead is not None:
        tally = lookahead_commits(model, tokenizer, a.n, a.lookahead, a.stride)
    elif a.free is not None:
        tally = first_slips(model, tokenizer, a.n, a.free)
    elif a.tokens:
        tally = tokens_by_category(model, tokenizer, a.n)
    else:
        tally = results_by_operation(model, tokenizer, a.n)
    print(json.dumps({"model": a.model, "n": a.n, **tally}))


if __name__ == "__main__":
    main()
