"""Arithmetic probe of a long-task checkpoint: whole results right, by operation.

    python -m vllm_elastic.training.probe examples/models/llada-long-arith --n 60
    python -m vllm_elastic.training.probe examples/models/llada-long-arith --n 20 --tokens

For every result of a held-out worked answer (`45+4=49`: the `49`), the true answer is shown up
to the result and everything from the result on is masked, as a left-to-right decoder sees it;
the result counts as right when the argmax at each of its digit positions is its digit. Grouped
by the operation before the `=` (`+`, `-`, `*`); the `#### N` line is not a computation and is
left out. Unlike train.frontier_result_accuracy (digits, pooled), this asks for whole results
and says which table is missing: run 7's model had 7/34 products, 20/266 sums, 15/158
differences.

`--tokens` asks the same of every answer token, one at a time (the true answer up to it, it and
everything after masked), grouped by problem kind and by what the token is: a `result` digit,
an `operand` digit (a copy: of the prompt's event, of the previous result, or a day/minute
number), `stop` (`####` or the answer's EOS: whether the model ends where the prompt says),
`newline`, or `word`. Exact match needs every one of them right; this says which kind of token
the model still gets wrong.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402

from vllm_elastic.checkpoint import MASK_ID  # noqa: E402
from vllm_elastic.reference import ReferenceLLaDA  # noqa: E402
from vllm_elastic.training import data, long_data  # noqa: E402
from vllm_elastic.training.train import (arith_tokens, load_tokenizer, result_digits,  # noqa: E402
                                         result_starts)

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
            category = ("result" if results[c] else
                        "operand" if bool(torch.isin(ids[0, c], tokens.digits)) else
                        "stop" if t in (eos, tokens.hashes) else
                        "newline" if t == tokens.newline else "word")
            right_total = by_category.setdefault(category, [0, 0])
            right_total[0] += int(pred[r, c]) == t
            right_total[1] += 1
    return tally


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=60, help="held-out problems")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", action="store_true",
                    help="every answer token by kind and category instead of whole results")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = ReferenceLLaDA.from_pretrained(a.model).float().eval()
    probe = tokens_by_category if a.tokens else results_by_operation
    tally = probe(model, load_tokenizer(a.model), a.n)
    print(json.dumps({"model": a.model, "n": a.n, **tally}))


if __name__ == "__main__":
    main()
