"""Training-only mixtures for the long task (--drill-frac, --facts-frac): the problem kinds'
arithmetic without their words (`drill`), and the same operations as independent lines whose
results no later line repeats (`facts`), so even uniformly masked rows must compute them."""

from __future__ import annotations

import random

from vllm_elastic.tools.training.data import Problem
from vllm_elastic.tools.training.long_data import MAX_VALUE, is_test

# --facts-low draws a step fact's operand below this: the values where a one-digit step
# changes the result's digit count (12-5=7, 7+6=13), which the diary hits most.
LOW_VALUE = 20


def drill(rng: random.Random, n: int) -> Problem:
    """Training only: the three kinds' arithmetic without their words, n operations on a
    running value (one-digit gains and losses as in diary/tank, a product added as in shop):

        Start with 36. Subtract 4. Add 5. Add 3 times 4. What is the result?
        36-4=32
        32+5=37
        3*4=12
        37+12=49
        #### 49

    Dense in result digits, the part the long model is slowest to learn (train.py's frontier
    probe). Never held out: its numbers follow the same split as every kind, so no held-out
    problem's (kind, numbers) is drawn, but drills are not a held-out kind."""
    while True:
        total = rng.randint(0, MAX_VALUE)
        q, a, numbers = [f"Start with {total}."], [], [total]
        for _ in range(n):
            op = rng.choices(("add", "sub", "mul"), (0.4, 0.4, 0.2))[0]
            room = (MAX_VALUE - total) // 4  # room for the largest product factor k
            if op == "mul" and room >= 1:
                k, c = rng.randint(1, 4), rng.randint(1, min(9, room))
                q.append(f"Add {k} times {c}.")
                a += [f"{k}*{c}={k * c}", f"{total}+{k * c}={total + k * c}"]
                numbers += [k, c]
                total += k * c
                continue
            up = op == "add" if 9 <= total <= MAX_VALUE - 9 else total < 9
            x = rng.randint(1, 9)
            new = total + x if up else total - x
            q.append(f"{'Add' if up else 'Subtract'} {x}.")
            a.append(f"{total}{'+' if up else '-'}{x}={new}")
            numbers.append(x if up else -x)
            total = new
        q.append("What is the result?")
        if not is_test("drill", tuple(numbers)):
            return Problem(" ".join(q), "\n".join(a) + f"\n#### {total}", total, "drill",
                           tuple(numbers))


def facts(rng: random.Random, n: int, low: float = 0.0) -> Problem:
    """Training only: n independent arithmetic facts of the kinds' shapes (a one-digit gain or
    loss on a value in 0..99, a product k*c as in shop, a product added to a total)::

        Work out 36-4, 57+8, 3*4 and 48+12.
        36-4=32
        57+8=65
        3*4=12
        48+12=60
        #### 60

    Unlike `drill`, no result is the next line's operand, so uniform masking cannot be met by
    copying a result from the following line: every scored result digit must be computed.
    Results are ~2 of every ~8 answer tokens, ~40x the result digits per batch of the word
    problems at a frontier.

    `low` (--facts-low): the share of one-digit steps whose operand is drawn from
    0..LOW_VALUE-1 instead of 0..99. Uniform operands change the result's digit count in ~6%
    of steps; the held-out diary's running totals stay low and do so in ~22% (its operand is
    below 20 in ~54% of steps), and that is where its first wrong digit mostly is. At 0 the
    random stream is unchanged."""
    while True:
        lines, numbers = [], []
        for _ in range(n):
            shape = rng.choices(("step", "product", "total"), (0.7, 0.15, 0.15))[0]
            if shape == "product":
                k, c = rng.randint(1, 4), rng.randint(1, 9)
                lines.append((f"{k}*{c}", k * c))
            elif shape == "total":
                k, c = rng.randint(1, 4), rng.randint(1, 9)
                a = rng.randint(0, MAX_VALUE - k * c)
                lines.append((f"{a}+{k * c}", a + k * c))
                k, c = a, k * c
            else:
                top = LOW_VALUE - 1 if low > 0 and rng.random() < low else MAX_VALUE
                a, x = rng.randint(0, top), rng.randint(1, 9)
                up = a + x <= MAX_VALUE and (a < x or rng.random() < 0.5)
                lines.append((f"{a}{'+' if up else '-'}{x}", a + x if up else a - x))
                k, c = a, x if up else -x
            numbers += [k, c]
        exprs = [e for e, _ in lines]
        listed = exprs[0] if n == 1 else f"{', '.join(exprs[:-1])} and {exprs[-1]}"
        if not is_test("facts", tuple(numbers)):
            return Problem(f"Work out {listed}.",
                           "\n".join(f"{e}={v}" for e, v in lines) + f"\n#### {lines[-1][1]}",
                           lines[-1][1], "facts", tuple(numbers))
