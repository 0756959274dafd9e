"""The synthetic word-problem generator: deterministic, correct, split without overlap."""

import re

from vllm_elastic.tools.training import data


def test_deterministic():
    a = data.train_problems(50, seed=3, one_step_fraction=0.3)
    b = data.train_problems(50, seed=3, one_step_fraction=0.3)
    assert a == b
    assert data.train_problems(50, seed=4) != a
    assert data.test_problems(20) == data.test_problems(20)


def test_train_test_never_overlap():
    train = data.train_problems(3000, one_step_fraction=0.2, bare_fraction=0.4)
    test = data.test_problem_list(300)
    assert any(p.question.startswith("What is") for p in train)
    assert all(not data.is_test(p.template, p.numbers) for p in train)
    assert all(data.is_test(p.template, p.numbers) for p in test)
    # Not even the (template, numbers) combination is shared, let alone the text.
    assert not {(p.template, p.numbers) for p in train} & {(p.template, p.numbers) for p in test}
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in test}) == len(test)  # distinct


def _check(p: data.Problem) -> None:
    lines = p.solution.split("\n")
    m = re.fullmatch(r"#### (\d+)", lines[-1])
    assert m and int(m.group(1)) == p.answer
    prev = None
    for line in lines[:-1]:
        expr, value = line.split("=")
        x, op, y = re.fullmatch(r"(\d+)([-+*])(\d+)", expr).groups()
        assert int(value) == {"+": int(x) + int(y), "-": int(x) - int(y),
                              "*": int(x) * int(y)}[op]
        assert 0 <= int(value) <= data.MAX_RESULT
        if prev is not None:
            assert int(x) == prev  # the second step uses the first step's result
        prev = int(value)
    assert prev == p.answer
    # every operand is a one-digit number that appears in the question
    assert all(1 <= n <= 9 for n in p.numbers)
    for n in p.numbers:
        assert re.search(rf"(?<!\d){n}(?!\d)", p.question)
    assert data.extract_answer(p.solution) == p.answer


def test_answers_correct_and_format():
    probs = (data.train_problems(500, one_step_fraction=0.3)
             + data.train_problems(200, seed=1, one_step_fraction=0.3, bare_fraction=1.0)
             + data.test_problem_list(100))
    for p in probs:
        _check(p)
    two = [p for p in probs if p.template in data.TWO_STEP_TEMPLATES]
    assert all(p.solution.count("\n") == 2 for p in two)
    assert {p.template for p in probs} >= set(data.TWO_STEP_TEMPLATES)
    assert len(data.TWO_STEP_TEMPLATES) >= 5
    assert len({p.question.split()[0] for p in probs}) >= 8  # names vary


def test_bare_expressions_match_word_problems():
    p = data.make_problem("add_mul", (3, 4, 5), "Tom", ("pens", "boxes"))
    b = data.bare_problem(p)
    assert b.question == "What is (3+4)*5?" and b.solution == p.solution == "3+4=7\n7*5=35\n#### 35"
    for tid in data.TWO_STEP_TEMPLATES + data.ONE_STEP_TEMPLATES:
        nums = (6, 2, 3) if tid in data.TWO_STEP_TEMPLATES else (6, 2)
        p = data.make_problem(tid, nums, "Mia", data.OBJECTS[0])
        expr = data.bare_problem(p).question.removeprefix("What is ").removesuffix("?")
        assert eval(expr) == p.answer


def test_test_problems_are_two_step_pairs():
    pairs = data.test_problems(30)
    assert len(pairs) == 30
    for q, a in pairs:
        assert isinstance(q, str) and isinstance(a, int)
    assert all(p.template in data.TWO_STEP_TEMPLATES for p in data.test_problem_list(30))


def test_extract_answer():
    assert data.extract_answer("3*4=12\n12-5=7\n#### 7") == 7
    assert data.extract_answer("#### 1,234.") == 1234
    assert data.extract_answer("no answer") is None
    assert data.extract_answer("####") is None


def test_chat_prompt_and_answer_ids():
    from vllm_elastic.tools.checkpoint import BOS_ID, EOS_ID, build_tokenizer

    tok = build_tokenizer(data.tokenizer_corpus(300), 512)
    p = data.train_problems(1)[0]
    ids = data.chat_prompt_ids(tok, p.question)
    assert isinstance(ids, list) and ids[0] == BOS_ID and all(isinstance(i, int) for i in ids)
    assert tok.decode(ids).endswith("assistant<|end_header_id|>\n\n")
    ans = data.answer_ids(tok, p.solution)
    assert ans[-1] == EOS_ID and tok.decode(ans[:-1]) == p.solution
