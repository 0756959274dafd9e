"""The long-answer word problems (long_data.py): deterministic, arithmetic right in every step,
answers long enough to matter for a cache, train and held-out splits that never overlap."""

import re

from vllm_elastic.training import long_data


def test_deterministic():
    assert long_data.train_problems(40, seed=2) == long_data.train_problems(40, seed=2)
    assert long_data.train_problems(40, seed=3) != long_data.train_problems(40, seed=2)
    assert long_data.test_problems(30) == long_data.test_problems(30)


def test_train_and_held_out_never_overlap():
    train = long_data.train_problems(3000, min_steps=2)
    test = long_data.test_problem_list(300)
    assert all(not long_data.is_test(p.template, p.numbers) for p in train)
    assert all(long_data.is_test(p.template, p.numbers) for p in test)
    assert not {(p.template, p.numbers) for p in train} & {(p.template, p.numbers) for p in test}
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in test}) == len(test)
    assert {p.template for p in test} == set(long_data.KINDS)


def test_every_step_is_right_and_the_answer_depends_on_the_prompt():
    for p in long_data.test_problem_list(300):
        lines = p.solution.split("\n")
        assert lines[-1] == f"#### {p.answer}"
        total = None
        for line in lines[:-1]:
            for x, op, y, value in re.findall(r"(\d+)([-+*])(\d+)=(\d+)", line):
                assert int(value) == {"+": int(x) + int(y), "-": int(x) - int(y),
                                      "*": int(x) * int(y)}[op]
                assert 0 <= int(value) <= long_data.MAX_VALUE
            numbers = [int(v) for v in re.findall(r"=(\d+)", line)]
            if numbers:
                total = numbers[-1]
        assert total == p.answer or p.template == "diary" and total is None
        # Every number the prompt gives appears in the worked answer.
        for n in re.findall(r"\d+", p.question.split("How many")[0]):
            if not re.fullmatch(r"Day \d+", n):
                assert n in p.solution


def test_answers_are_long_with_a_long_tail_and_fit_gen_512():
    from vllm_elastic.checkpoint import build_tokenizer
    from vllm_elastic.training.data import answer_ids

    tok = build_tokenizer(long_data.tokenizer_corpus(n=1500), 512)
    lengths = sorted(len(answer_ids(tok, p.solution)) for p in long_data.test_problem_list(300))
    median, q75 = lengths[len(lengths) // 2], lengths[3 * len(lengths) // 4]
    assert median >= 120 and q75 >= 200 and lengths[-1] <= 400
