"""Synthetic GSM8K-style word problems for training a small LLaDA (deterministic, no downloads).

Every problem needs two dependent arithmetic steps (the second uses the first's result), has a
short worked solution and ends with GSM8K's final line `#### N`:

    Q: Mia has 3 bags with 4 pens in each. She gives away 5 pens. How many pens does Mia have now?
    A: 3*4=12
       12-5=7
       #### 7

Difficulty (chosen so a ~7M-parameter model on one CPU core gets there in ~2 hours): every
operand is one digit (1-9), intermediate and final results lie in 0..99, and six templates
cover the operation pairs a*b+c, a*b-c, (a+b)*c, (a-b)*c, a+b-c, a-b+c, each with several
names and objects, so the model has to read the numbers and the operation from the prompt.
The numbers come first in the prompt; the solution restates them in the same order.
One-step problems (a+b, a-b, a*b) are available for a curriculum (`one_step_fraction`), and
so are bare expressions of the same arithmetic ("What is 3*4-5?", `bare_fraction`), which teach
the model to copy operands from the prompt (the hard part for a tiny model: see train.py).

Train/test split: by a hash of (template, numbers), so a held-out problem never shares its
template and numbers with any training problem (whatever the names and objects); 10% of the
number combinations are held out. `test_problems(n)` is a fixed, seeded held-out sample.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

NAMES = ["Mia", "Tom", "Ava", "Sam", "Leo", "Zoe", "Ben", "Amy", "Max", "Eva", "Dan", "Lily",
         "Noah", "Emma", "Jack", "Ella"]
FEMALE = {"Mia", "Ava", "Zoe", "Amy", "Eva", "Lily", "Emma", "Ella"}
# (plural, container) pairs.
OBJECTS = [("apples", "bags"), ("pens", "boxes"), ("cards", "packs"), ("eggs", "cartons"),
           ("books", "shelves"), ("cookies", "jars"), ("stickers", "sheets"), ("shells", "buckets"),
           ("marbles", "cups"), ("toys", "crates")]
MAX_RESULT = 99
TEST_PERCENT = 10


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str          # worked steps, ending with "#### N"
    answer: int
    template: str
    numbers: tuple[int, ...]

    @property
    def text(self) -> str:
        return self.question + "\n" + self.solution


def _pron(name: str) -> str:
    return "She" if name in FEMALE else "He"


# Each template: (id, operand ranges check, question format, steps function).
# steps(a, b, c) -> list of (expression, value) or None when a result leaves 0..MAX_RESULT.
def _two_step(tid: str, a: int, b: int, c: int, name: str, obj: str, box: str):
    p = _pron(name)
    if tid == "mul_add":
        x, y = a * b, a * b + c
        q = (f"{name} has {a} {box} with {b} {obj} in each and {c} more {obj}. "
             f"How many {obj} does {name} have?")
        steps = [(f"{a}*{b}", x), (f"{x}+{c}", y)]
    elif tid == "mul_sub":
        x, y = a * b, a * b - c
        q = (f"{name} has {a} {box} with {b} {obj} in each. {p} gives away {c} {obj}. "
             f"How many {obj} does {name} have now?")
        steps = [(f"{a}*{b}", x), (f"{x}-{c}", y)]
    elif tid == "add_mul":
        x, y = a + b, (a + b) * c
        q = (f"{name} buys {a} red {box} and {b} blue {box}. Each has {c} {obj}. "
             f"How many {obj} does {name} buy?")
        steps = [(f"{a}+{b}", x), (f"{x}*{c}", y)]
    elif tid == "sub_mul":
        x, y = a - b, (a - b) * c
        q = (f"{name} has {a} {box} and sells {b} of them. Each has {c} {obj}. "
             f"How many {obj} are left?")
        steps = [(f"{a}-{b}", x), (f"{x}*{c}", y)]
    elif tid == "add_sub":
        x, y = a + b, a + b - c
        q = (f"{name} has {a} {obj} and gets {b} more. Then {p.lower()} loses {c}. "
             f"How many {obj} does {name} have now?")
        steps = [(f"{a}+{b}", x), (f"{x}-{c}", y)]
    elif tid == "sub_add":
        x, y = a - b, a - b + c
        q = (f"{name} has {a} {obj} and eats {b}. Then {p.lower()} finds {c} more. "
             f"How many {obj} does {name} have now?")
        steps = [(f"{a}-{b}", x), (f"{x}+{c}", y)]
    else:
        raise KeyError(tid)
    if not all(0 <= v <= MAX_RESULT for _, v in steps):
        return None
    return q, steps


def _one_step(tid: str, a: int, b: int, name: str, obj: str, box: str):
    if tid == "add1":
        q, steps = f"{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have?", \
            [(f"{a}+{b}", a + b)]
    elif tid == "sub1":
        q, steps = f"{name} has {a} {obj} and gives away {b}. How many {obj} are left?", \
            [(f"{a}-{b}", a - b)]
    elif tid == "mul1":
        q, steps = f"{name} has {a} {box} with {b} {obj} in each. How many {obj} in all?", \
            [(f"{a}*{b}", a * b)]
    else:
        raise KeyError(tid)
    if not all(0 <= v <= MAX_RESULT for _, v in steps):
        return None
    return q, steps


TWO_STEP_TEMPLATES = ["mul_add", "mul_sub", "add_mul", "sub_mul", "add_sub", "sub_add"]
ONE_STEP_TEMPLATES = ["add1", "sub1", "mul1"]


def _solution(steps: list[tuple[str, int]]) -> str:
    return "\n".join(f"{e}={v}" for e, v in steps) + f"\n#### {steps[-1][1]}"


def is_test(template: str, numbers: tuple[int, ...]) -> bool:
    """The split: a stable hash of (template, numbers); TEST_PERCENT% of combinations are test."""
    key = f"{template}:{','.join(map(str, numbers))}".encode()
    return int(hashlib.sha256(key).hexdigest(), 16) % 100 < TEST_PERCENT


def make_problem(template: str, numbers: tuple[int, ...], name: str, obj: tuple[str, str]
                 ) -> Problem | None:
    if template in TWO_STEP_TEMPLATES:
        r = _two_step(template, *numbers, name, *obj)
    else:
        r = _one_step(template, *numbers, name, *obj)
    if r is None:
        return None
    q, steps = r
    return Problem(q, _solution(steps), steps[-1][1], template, tuple(numbers))


BARE_EXPRESSIONS = {"mul_add": "{a}*{b}+{c}", "mul_sub": "{a}*{b}-{c}",
                    "add_mul": "({a}+{b})*{c}", "sub_mul": "({a}-{b})*{c}",
                    "add_sub": "{a}+{b}-{c}", "sub_add": "{a}-{b}+{c}",
                    "add1": "{a}+{b}", "sub1": "{a}-{b}", "mul1": "{a}*{b}"}


def bare_problem(p: Problem) -> Problem:
    """The same arithmetic as a bare expression ("What is 3*4-5?"), same worked solution.

    A curriculum aid: with a short prompt and the numbers next to their operators, learning to
    copy the operands from the prompt is much easier. It keeps the word problem's template id,
    so the split (by template and numbers) covers it: a held-out word problem's arithmetic
    never appears in training as a bare expression either.
    """
    names = dict(zip("abc", p.numbers))
    return Problem(f"What is {BARE_EXPRESSIONS[p.template].format(**names)}?", p.solution,
                   p.answer, p.template, p.numbers)


def sample_problem(rng: random.Random, split: str = "train", one_step_fraction: float = 0.0,
                   bare_fraction: float = 0.0) -> Problem:
    """One random problem of `split` ("train" or "test") drawn with `rng` (rejection sampling);
    with probability `bare_fraction` written as a bare expression (`bare_problem`)."""
    if bare_fraction > 0 and rng.random() < bare_fraction:
        return bare_problem(sample_problem(rng, split, one_step_fraction))
    want_test = split == "test"
    while True:
        if rng.random() < one_step_fraction:
            tid, k = rng.choice(ONE_STEP_TEMPLATES), 2
        else:
            tid, k = rng.choice(TWO_STEP_TEMPLATES), 3
        numbers = tuple(rng.randint(1, 9) for _ in range(k))
        if is_test(tid, numbers) != want_test:
            continue
        p = make_problem(tid, numbers, rng.choice(NAMES), rng.choice(OBJECTS))
        if p is not None:
            return p


def train_problems(n: int, seed: int = 0, one_step_fraction: float = 0.0,
                   bare_fraction: float = 0.0) -> list[Problem]:
    rng = random.Random(f"train-{seed}")
    return [sample_problem(rng, "train", one_step_fraction, bare_fraction) for _ in range(n)]


def distinct_problems(sample, n: int) -> list[Problem]:
    """n problems from `sample()` with distinct questions, in the order drawn."""
    out, seen = [], set()
    while len(out) < n:
        p = sample()
        if p.question not in seen:
            seen.add(p.question)
            out.append(p)
    return out


def test_problem_list(n: int, seed: int = 1234) -> list[Problem]:
    """n held-out two-step problems, distinct, in a fixed order (same for every caller)."""
    rng = random.Random(f"test-{seed}")
    return distinct_problems(lambda: sample_problem(rng, "test"), n)


def test_problems(n: int, seed: int = 1234) -> list[tuple[str, int]]:
    """Held-out (prompt, answer_number) pairs."""
    return [(p.question, p.answer) for p in test_problem_list(n, seed)]


def chat_prompt_ids(tokenizer, question: str) -> list[int]:
    """The question as a chat prompt (the tokenizer's template, generation prompt added)."""
    return list(tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                              add_generation_prompt=True, tokenize=True,
                                              return_dict=False))


def answer_ids(tokenizer, solution: str) -> list[int]:
    """The solution's tokens followed by one EOS (the canvas is EOS-padded beyond it)."""
    return tokenizer.encode(solution, add_special_tokens=False) + [tokenizer.eos_token_id]


def extract_answer(text: str) -> int | None:
    """The number after the last '####' (GSM8K's convention), or None."""
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip().split()
    if not tail:
        return None
    try:
        return int(tail[0].replace(",", "").rstrip("."))
    except ValueError:
        return None


def tokenizer_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """Training text for the BPE tokenizer (train split only, plus the chat roles)."""
    probs = train_problems(n, seed, one_step_fraction=0.3)
    return [p.text for p in probs] + ["user\n\nassistant\n\n"] * 500
