"""Long-answer word problems (4-12 dependent steps, GSM8K-style worked answers), deterministic.

The tiny task (`data.py`) has answers of at most ~20 tokens, so a request takes ~3 diffusion
steps and no cache can show what it saves. These problems have worked answers of ~100-280
tokens: every step is one sentence that restates an event of the prompt and does its arithmetic,
and the last line is GSM8K's `#### N`. Three kinds, several names, objects and wordings:

``diary`` (a running total of gains and losses, 4-12 events)::

    Mia has 5 apples. Day 1: she gets 3 more. Day 2: she gives away 2. ... How many apples
    does Mia have after day 6?
    Mia starts with 5 apples.
    Day 1: Mia gets 3, so she has 5+3=8 apples.
    Day 2: Mia gives away 2, so she has 8-2=6 apples.
    ...
    #### 17

``tank`` (a repeated change, 4-12 rounds)::

    A tank holds 7 liters. Every minute 6 liters flow in. How many liters are in the tank
    after 5 minutes?
    The tank starts with 7 liters.
    Minute 1: 6 liters flow in, so it holds 7+6=13 liters.
    ...
    #### 37

``shop`` (item costs, then a running total, 3-6 items: two sentences per item)::

    Tom buys 3 pens at 4 dollars each, 2 books at 6 dollars each, ... How many dollars does
    Tom spend?
    The pens cost 3*4=12 dollars. The total is 12 dollars.
    The books cost 2*6=12 dollars. The total is 12+12=24 dollars.
    ...
    #### 24

Difficulty: every change is one digit, every intermediate and final value lies in 0..99, so
each step is a one-digit operation on a number the model wrote a sentence earlier; the hard
part is doing 4-12 of them in a row without a slip (exact match needs all of them). Answers
depend on every number of the prompt.

Split: by a stable hash of (kind, numbers), 10% held out, so a held-out problem never shares
its numbers with a training problem in any wording. `test_problem_list(n)` is a fixed held-out
sample; training may also draw shorter problems (`min_steps`) for a curriculum, while the
held-out set always has the full 4-12 (3-6 items for shop) steps. long_drills.py has the
training-only mixtures: the kinds' arithmetic without their words, and as independent lines.
"""

from __future__ import annotations

import hashlib
import random

from vllm_elastic.tools.training.data import FEMALE, NAMES, Problem, distinct_problems

MAX_VALUE = 99
TEST_PERCENT = 10
KINDS = ("diary", "tank", "shop")
KIND_WEIGHTS = (0.45, 0.25, 0.30)
MIN_STEPS, MAX_STEPS = 4, 12          # diary and tank events
MIN_ITEMS, MAX_ITEMS = 3, 6           # shop items (two sentences each)

OBJECTS = ["apples", "pens", "cards", "eggs", "books", "cookies", "stickers", "shells",
           "marbles", "coins"]
GAINS = [("gets {x} more", "gets {x}"), ("finds {x} more", "finds {x}"),
         ("buys {x} more", "buys {x}")]
LOSSES = [("gives away {x}", "gives away {x}"), ("loses {x}", "loses {x}"),
          ("sells {x}", "sells {x}")]
TANKS = [("tank", "liters", "flow in", "flow out"), ("barrel", "gallons", "pour in", "leak out"),
         ("pool", "buckets", "are added", "are removed")]
ITEMS = ["pens", "books", "cups", "hats", "balls", "kites", "socks", "bowls", "maps", "bells"]


def is_test(kind: str, numbers: tuple[int, ...]) -> bool:
    key = f"long:{kind}:{','.join(map(str, numbers))}".encode()
    return int(hashlib.sha256(key).hexdigest(), 16) % 100 < TEST_PERCENT


def _pron(name: str) -> str:
    return "she" if name in FEMALE else "he"


def _diary(rng: random.Random, n: int) -> Problem | None:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    start = rng.randint(1, 30)
    total, events, numbers = start, [], [start]
    for _ in range(n):
        gain = total < 10 or (total <= 89 and rng.random() < 0.55)
        x = rng.randint(1, 9)
        if not gain:
            x = min(x, total)
        new = total + x if gain else total - x
        if not 0 <= new <= MAX_VALUE:
            return None
        events.append((gain, x, total, new, rng.randrange(3)))
        numbers.append(x if gain else -x)
        total = new
    p = _pron(name)
    q = [f"{name} has {start} {obj}."]
    a = [f"{name} starts with {start} {obj}."]
    for d, (gain, x, old, new, w) in enumerate(events, 1):
        told, did = (GAINS if gain else LOSSES)[w]
        q.append(f"Day {d}: {p} {told.format(x=x)}.")
        a.append(f"Day {d}: {name} {did.format(x=x)}, so {p} has {old}{'+' if gain else '-'}{x}"
                 f"={new} {obj}.")
    q.append(f"How many {obj} does {name} have after day {n}?")
    return Problem(" ".join(q), "\n".join(a) + f"\n#### {total}", total, "diary", tuple(numbers))


def _tank(rng: random.Random, n: int) -> Problem | None:
    box, unit, fill, drain = rng.choice(TANKS)
    inflow = rng.random() < 0.6
    x = rng.randint(1, min(9, MAX_VALUE // n))
    start = rng.randint(0, MAX_VALUE - n * x) if inflow else rng.randint(n * x, MAX_VALUE)
    verb, sign = (fill, "+") if inflow else (drain, "-")
    q = (f"A {box} holds {start} {unit}. Every minute {x} {unit} {verb}. "
         f"How many {unit} are in the {box} after {n} minutes?")
    a, total = [f"The {box} starts with {start} {unit}."], start
    for m in range(1, n + 1):
        new = total + x if inflow else total - x
        a.append(f"Minute {m}: {x} {unit} {verb}, so it holds {total}{sign}{x}={new} {unit}.")
        total = new
    return Problem(q, "\n".join(a) + f"\n#### {total}", total, "tank",
                   (start, x if inflow else -x, n))


def _shop(rng: random.Random, n: int) -> Problem | None:
    name = rng.choice(NAMES)
    items = rng.sample(ITEMS, n)
    buys = [(rng.randint(1, 4), rng.randint(1, 9)) for _ in items]
    costs = [k * c for k, c in buys]
    if sum(costs) > MAX_VALUE:
        return None
    parts = [f"{k} {item} at {c} dollars each" for item, (k, c) in zip(items, buys)]
    listed = parts[0] if n == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    q = (f"{name} buys {listed}. "
         f"How many dollars does {name} spend?")
    a, total = [], 0
    for item, (k, c), cost in zip(items, buys, costs):
        line = f"The {item} cost {k}*{c}={cost} dollars. The total is "
        line += f"{cost} dollars." if total == 0 else f"{total}+{cost}={total + cost} dollars."
        a.append(line)
        total += cost
    numbers = tuple(v for kc in buys for v in kc)
    return Problem(q, "\n".join(a) + f"\n#### {total}", total, "shop", numbers)


def sample_problem(rng: random.Random, split: str = "train", min_steps: int = MIN_STEPS,
                   max_steps: int = MAX_STEPS) -> Problem:
    """One problem of `split` ("train" or "test"); diary/tank take min_steps..max_steps events
    and shop max(2, min_steps // 2)..max_steps // 2 items (at most 6; 1 for max_steps < 4);
    the held-out set always uses the full range."""
    want_test = split == "test"
    while True:
        kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
        if kind == "shop":
            hi = min(MAX_ITEMS, max(1, max_steps // 2))
            p = _shop(rng, rng.randint(min(hi, max(2, min_steps // 2)), hi))
        else:
            p = (_diary if kind == "diary" else _tank)(rng, rng.randint(min_steps, max_steps))
        if p is not None and is_test(p.template, p.numbers) == want_test:
            return p


def train_problems(n: int, seed: int = 0, min_steps: int = MIN_STEPS) -> list[Problem]:
    rng = random.Random(f"long-train-{seed}")
    return [sample_problem(rng, "train", min_steps) for _ in range(n)]


def test_problem_list(n: int, seed: int = 1234) -> list[Problem]:
    """n distinct held-out problems in a fixed order (the same for every caller)."""
    rng = random.Random(f"long-test-{seed}")
    return distinct_problems(lambda: sample_problem(rng, "test"), n)


def test_problems(n: int, seed: int = 1234) -> list[tuple[str, int]]:
    return [(p.question, p.answer) for p in test_problem_list(n, seed)]


def tokenizer_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Training text for the BPE tokenizer (train split only, plus the chat roles)."""
    return [p.text for p in train_problems(n, seed, min_steps=2)] + ["user\n\nassistant\n\n"] * 500
