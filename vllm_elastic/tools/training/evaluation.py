"""Held-out evaluation during training: exact match of greedy full-recompute decoding with the
oracle, the attention-entropy diagnostic, and result digits predicted at the frontier."""

from __future__ import annotations

import torch

from vllm_elastic.oracles.llada import ReferenceLLaDA, cut_at_eos, generate
from vllm_elastic.params import DiffusionParams
from vllm_elastic.tools.checkpoint import MASK_ID
from vllm_elastic.tools.training import data
from vllm_elastic.tools.training.batches import pad_rows, task_data
from vllm_elastic.tools.training.model_setup import attention_entropy


@torch.no_grad()
def evaluate(model: ReferenceLLaDA, tokenizer, n: int, gen_length: int = 64,
             block_length: int = 32, steps: int | None = None, task: str = "arith",
             schedule: str = "blocks") -> dict:
    """Held-out exact-match accuracy of greedy full-recompute decoding (the oracle's `generate`):
    LLaDA's blocks, one token per step, or (schedule="window") Elastic-Cache's window of 32
    with threshold 0.9, several tokens per step."""
    was_training = model.training
    model.eval()
    if schedule == "window":
        params = DiffusionParams(gen_length=gen_length, schedule="window", window_length=32,
                                 threshold=0.9)
    else:
        params = DiffusionParams(gen_length=gen_length, block_length=block_length, steps=steps)
    correct, samples = [], []
    for i, (question, answer) in enumerate(task_data(task).test_problems(n)):
        out = generate(model, data.chat_prompt_ids(tokenizer, question), params)
        text = tokenizer.decode(cut_at_eos(out, tokenizer.eos_token_id), skip_special_tokens=True)
        if data.extract_answer(text) == answer:
            correct.append(i)
        if len(samples) < 3:
            samples.append({"q": question, "out": text, "answer": answer})
    problems = task_data(task).test_problem_list(2)
    rows = [data.chat_prompt_ids(tokenizer, p.question) + data.answer_ids(tokenizer, p.solution)
            for p in problems]
    entropy = attention_entropy(model, pad_rows(rows))
    frontier = frontier_result_accuracy(model, tokenizer, task)
    model.train(was_training)
    return {"accuracy": len(correct) / n, "attention_entropy": entropy,
            "frontier_result_accuracy": frontier, "correct": len(correct),
            "correct_indices": correct, "n": n,
            "gen_length": gen_length, "block_length": block_length, "schedule": schedule,
            "task": task, "samples": samples}


@torch.no_grad()
def frontier_result_accuracy(model: ReferenceLLaDA, tokenizer, task: str, n: int = 10) -> float:
    """Share of result digits (the digits after each '=') of n held-out worked answers that the
    model predicts with the true answer visible before the digit and everything from it on
    masked: the arithmetic as left-to-right decoding needs it, without the next line to copy
    from. Cheap (one batched forward per problem) and more sensitive than exact match."""
    right = total = 0
    for p in task_data(task).test_problem_list(n):
        prompt = data.chat_prompt_ids(tokenizer, p.question)
        answer = data.answer_ids(tokenizer, p.solution)
        pieces = [tokenizer.decode([i]) for i in answer]
        targets = []
        for j, piece in enumerate(pieces):
            k = j - 1
            while k >= 0 and pieces[k].isdigit():
                k -= 1
            if piece.isdigit() and k >= 0 and pieces[k].strip() == "=":
                targets.append(len(prompt) + j)
        if not targets:
            continue
        ids = torch.tensor(prompt + answer).repeat(len(targets), 1)
        for row, j in enumerate(targets):
            ids[row, j:] = MASK_ID
        pred = model(ids).argmax(-1)
        want = torch.tensor(prompt + answer)
        right += sum(int(pred[row, j] == want[j]) for row, j in enumerate(targets))
        total += len(targets)
    return round(right / max(1, total), 4)
