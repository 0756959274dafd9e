"""The long-answer word problems (long_data.py): deterministic, arithmetic right in every step,
answers long enough to matter for a cache, train and held-out splits that never overlap."""

import random
import re

import torch

from vllm_elastic.tools import checkpoint
from vllm_elastic.tools.training import batches, long_data, long_drills, masks, objective, options

# Trainer arguments of the batch tests: long problems, one large batch, answer-sized canvases.
LONG_BATCH_ARGS = ["--out", "unused", "--minutes", "1", "--task", "long", "--gen-length", "0",
                   "--batch-tokens", "100000", "--long-frac", "0"]


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
    from vllm_elastic.tools.checkpoint import build_tokenizer
    from vllm_elastic.tools.training.data import answer_ids

    tok = build_tokenizer(long_data.tokenizer_corpus(n=1500), 512)
    lengths = sorted(len(answer_ids(tok, p.solution)) for p in long_data.test_problem_list(300))
    median, q75 = lengths[len(lengths) // 2], lengths[3 * len(lengths) // 4]
    assert median >= 120 and q75 >= 200 and lengths[-1] <= 400


def test_drills_do_their_arithmetic_and_stay_in_range():
    """long_data.drill (training only, --drill-frac): every line's arithmetic is right, every
    value in 0..99, the answer is the last value, and held-out (kind, numbers) never occur."""
    import re

    rng = random.Random(7)
    for _ in range(300):
        p = long_drills.drill(rng, rng.randint(2, 12))
        lines = p.solution.split("\n")
        value = int(re.match(r"Start with (\d+)\.", p.question).group(1))
        for line in lines[:-1]:
            a, op, b, c = re.fullmatch(r"(\d+)([-+*])(\d+)=(\d+)", line).groups()
            a, b, c = int(a), int(b), int(c)
            assert c == {"+": a + b, "-": a - b, "*": a * b}[op] and 0 <= c <= 99
            if op != "*":
                assert a == value
                value = c
        assert lines[-1] == f"#### {value}" and p.answer == value
        assert not long_data.is_test("drill", p.numbers)


def test_drill_share_of_a_long_batch():
    from vllm_elastic.tools.checkpoint import build_tokenizer
    from vllm_elastic.tools.training import data

    tok = build_tokenizer(data.tokenizer_corpus(200), 512)
    base = LONG_BATCH_ARGS
    with_drills = options.parse_args(base + ["--drill-frac", "1"])
    ids, plens, _, _kinds = batches.make_batch(with_drills, tok, 3)
    assert all("What is the result?" in tok.decode(r[:int(p)].tolist())
               for r, p in zip(ids, plens))
    plain = options.parse_args(base)
    assert torch.equal(batches.make_batch(plain, tok, 3)[0],
                       batches.make_batch(options.parse_args(base + ["--drill-frac", "0"]), tok, 3)[0])


def test_eos_tail_of_a_long_batch_follows_the_flag():
    """--eos-tail-max bounds the EOS padding after a batch's longest answer (G minus the
    longest answer), and a large value gives tails a short one never does, so the masks left
    after a frontier stop counting the answer's remaining tokens."""
    from vllm_elastic.tools.checkpoint import build_tokenizer

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    base = LONG_BATCH_ARGS

    def tails(extra: list[str]) -> list[int]:
        args = options.parse_args(base + extra)
        out = []
        for step in range(40):
            batch = batches.make_batch(args, tok, step)
            answer_lengths = masks.first_answer_eos(batch.ids, batch.prompt_lengths) \
                - batch.prompt_lengths
            out.append(batch.gen_length - int(answer_lengths.max()))
        return out

    short, wide = tails([]), tails(["--eos-tail-max", "256"])
    assert min(short) >= 0 and max(short) <= 32
    assert min(wide) >= 0 and max(wide) <= 256 and max(wide) > 64


def test_facts_are_right_independent_and_in_range():
    """long_data.facts (training only, --facts-frac): each line is one of the prompt's
    expressions, worked right, values in 0..99; no result is a later line's operand by
    construction (operands are drawn afresh), and held-out (kind, numbers) never occur."""
    import re

    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(4, 16)
        p = long_drills.facts(rng, n)
        listed = re.fullmatch(r"Work out (.*)\.", p.question).group(1)
        exprs = re.split(r", | and ", listed)
        lines = p.solution.split("\n")
        assert len(lines) == n + 1 and len(exprs) == n
        for expr, line in zip(exprs, lines[:-1]):
            a, op, b, c = re.fullmatch(r"(\d+)([-+*])(\d+)=(\d+)", line).groups()
            assert f"{a}{op}{b}" == expr
            a, b, c = int(a), int(b), int(c)
            assert c == {"+": a + b, "-": a - b, "*": a * b}[op] and 0 <= a <= 99
            assert 0 <= c <= 99
        assert lines[-1] == f"#### {p.answer}" and p.answer == int(lines[-2].split("=")[1])
        assert not long_data.is_test("facts", p.numbers)


def test_facts_low_draws_step_operands_where_the_digit_count_changes():
    """--facts-low: at 0 the facts (and the random stream after them) are unchanged; at 1
    every one-digit step's operand is below long_drills.LOW_VALUE, the arithmetic still right,
    and far more steps change the result's digit count than with uniform operands."""
    import re

    def steps(low: float, seed: int = 3) -> tuple[list[tuple[int, str, int, int]], float]:
        rng = random.Random(seed)
        found = []
        for _ in range(400):
            p = long_drills.facts(rng, 8, low=low)
            found += [(int(a), op, int(x), int(c))
                      for a, op, x, c in re.findall(r"^(\d+)([-+])(\d)=(\d+)$", p.solution,
                                                    re.M)]
        return found, rng.random()

    uniform, after_uniform = steps(0.0)
    rng, rng_low0 = random.Random(3), random.Random(3)
    default = [long_drills.facts(rng, 8).solution for _ in range(400)]
    assert after_uniform == rng.random()  # low=0 draws nothing extra
    assert default == [long_drills.facts(rng_low0, 8, low=0.0).solution for _ in range(400)]
    low, _ = steps(1.0)
    # subtractions are all steps (a shop-style total adds a product that can be one digit)
    assert all(a < long_drills.LOW_VALUE for a, op, _, _ in low if op == "-")
    assert all(c == (a + x if op == "+" else a - x) and 0 <= c <= 99 for a, op, x, c in low)

    def changes(found):
        return sum(len(str(a)) != len(str(c)) for a, _, _, c in found) / len(found)
    assert changes(uniform) < 0.1 and changes(low) > 0.2


def test_facts_and_drills_share_a_long_batch():
    from vllm_elastic.tools.checkpoint import build_tokenizer
    from vllm_elastic.tools.training import data

    tok = build_tokenizer(data.tokenizer_corpus(200), 512)
    base = LONG_BATCH_ARGS
    ids, plens, _, _kinds = batches.make_batch(options.parse_args(base + ["--facts-frac", "1"]), tok, 3)
    assert all("Work out" in tok.decode(r[:int(p)].tolist()) for r, p in zip(ids, plens))
    ids, plens, _, _kinds = batches.make_batch(options.parse_args(base + ["--facts-frac", "0.5",
                                                      "--drill-frac", "0.5"]), tok, 3)
    prompts = [tok.decode(r[:int(p)].tolist()) for r, p in zip(ids, plens)]
    assert any("Work out" in q for q in prompts) and any("What is the result?" in q
                                                         for q in prompts)
    assert all("Work out" in q or "What is the result?" in q for q in prompts)


def test_results_rows_mask_and_score_exactly_the_result_digits():
    """--results-frac: facts rows masked on their result digits only (`32` in `36-4=32` and the
    `#### N` line; operands and everything else visible), scored there alone; other kinds are
    never picked (their results reappear as later operands, so they could be copied)."""
    from vllm_elastic.oracles.llada import ReferenceLLaDA
    from vllm_elastic.tools.checkpoint import build_tokenizer, tiny_config

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    args = options.parse_args(["--out", "unused", "--minutes", "1", "--task", "long", "--gen-length",
                         "0", "--batch-tokens", "100000", "--long-frac", "0",
                         "--facts-frac", "0.5", "--results-frac", "1"])
    batch = batches.make_batch(args, tok, 3)
    rows = masks.result_rows(args, batch.kinds, 3)
    assert torch.equal(rows, torch.tensor([k == "facts" for k in batch.kinds]))
    assert 0 < int(rows.sum()) < len(rows)
    results = masks.result_digits(batch.ids, batch.prompt_lengths, masks.arith_tokens(tok))
    for r in range(len(rows)):
        if not rows[r]:
            continue
        answer = batch.ids[r, int(batch.prompt_lengths[r]):]
        marks = results[r, int(batch.prompt_lengths[r]):]
        shown = "".join("_" if m else tok.decode([int(t)]) for t, m in zip(answer, marks))
        want = "\n".join(
            line.split("=")[0] + "=" + "_" * len(line.split("=")[1]) if "=" in line
            else "#### " + "_" * (len(line) - 5)
            for line in tok.decode(answer.tolist()).split("<|endoftext|>")[0].split("\n"))
        assert shown.startswith(want)
        assert not results[r, :int(batch.prompt_lengths[r])].any()
    assert masks.result_rows(options.parse_args(["--out", "u", "--minutes", "1"]), batch.kinds, 3) is None

    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ReferenceLLaDA(tiny_config(len(tok), 1, 32, 1, mlp=64))

        def forward(self, x):
            seen["x"] = x
            return self.inner(x)

    mask = results & rows[:, None]
    loss = objective.sft_loss(Spy(), batch.ids, batch.prompt_lengths, 1e-3,
                      torch.Generator().manual_seed(0), results=mask)
    x = seen["x"]
    assert torch.equal(x[rows] == checkpoint.MASK_ID, mask[rows])   # exactly the results, nothing else
    assert torch.isfinite(loss) and float(loss.detach()) > 0


def test_frontier_at_results_cuts_at_a_result_first_digit():
    """--frontier-at-results: those frontier rows open their window on a result's first digit
    (everything before it visible, it masked); the other rows keep the uniform cut."""
    from vllm_elastic.tools.checkpoint import build_tokenizer

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    base = LONG_BATCH_ARGS
    args = options.parse_args(base + ["--frontier-at-results", "1"])
    batch = batches.make_batch(args, tok, 5)
    arith = masks.arith_tokens(tok)
    cuts = masks.frontier_cuts(args, batch.ids, batch.prompt_lengths, arith, 5)
    starts = masks.result_starts(batch.ids, batch.prompt_lengths, arith)
    assert torch.equal(cuts, starts) and bool(cuts.any(1).all())
    digits = masks.result_digits(batch.ids, batch.prompt_lengths, arith)
    assert bool((starts <= digits).all()) and int(starts.sum()) < int(digits.sum())
    p_mask = torch.full(batch.ids.shape, 0.5)
    masked, scored = masks.frontier_masks(batch.ids, batch.prompt_lengths, p_mask, 32,
                                      torch.Generator().manual_seed(0), cuts)
    first = masked.float().argmax(1)
    assert all(bool(starts[r, first[r]]) for r in range(len(first)))
    assert bool(scored[torch.arange(len(first)), first].all())
    assert masks.frontier_cuts(options.parse_args(base), batch.ids, batch.prompt_lengths, arith, 5) is None


def test_frontier_at_lines_cuts_at_a_line_start_or_the_answer_eos():
    """--frontier-at-lines: after the --frontier-at-results share, that share of frontier rows
    cuts at an answer line's first token (`Day`, `Minute`, `The`, `####`) or the answer's EOS;
    never inside a line, never in the padding EOS."""
    from vllm_elastic.tools.checkpoint import EOS_ID, build_tokenizer

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    base = LONG_BATCH_ARGS
    arith = masks.arith_tokens(tok)
    batch = batches.make_batch(options.parse_args(base), tok, 5)
    lines = masks.line_starts(batch.ids, batch.prompt_lengths, arith)
    for r in range(len(batch.ids)):
        row, plen = batch.ids[r].tolist(), int(batch.prompt_lengths[r])
        answer = row[plen:row.index(EOS_ID, plen)]
        want = [plen] + [plen + i + 1 for i, t in enumerate(answer) if t == arith.newline]
        want.append(plen + len(answer))                       # the answer's EOS
        assert lines[r].nonzero()[:, 0].tolist() == want
        assert tok.decode([row[want[-2]]]) == "####"          # the last line is `#### N`
    args = options.parse_args(base + ["--frontier-at-results", "0.5", "--frontier-at-lines", "0.5"])
    cuts = masks.frontier_cuts(args, batch.ids, batch.prompt_lengths, arith, 5)
    starts = masks.result_starts(batch.ids, batch.prompt_lengths, arith)
    at_results = (cuts & starts).any(1)
    at_lines = (cuts & lines).any(1)
    assert bool((at_results ^ at_lines).all())                # every row one kind, never both
    assert 0 < int(at_results.sum()) < len(cuts)
    assert torch.equal(cuts[at_lines], lines[at_lines])
    assert torch.equal(cuts[at_results], starts[at_results])


def test_frontier_at_copies_cuts_at_a_word_the_answer_copies_from_the_prompt():
    """--frontier-at-copies: after the results and lines shares, that share of frontier rows
    cuts at an answer word token that also occurs in the row's prompt (the day's verb, the shop
    item, the name); never at a digit, at a word the prompt lacks, or past the answer's EOS."""
    from vllm_elastic.tools.checkpoint import EOS_ID, build_tokenizer

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    base = LONG_BATCH_ARGS
    arith = masks.arith_tokens(tok)
    batch = batches.make_batch(options.parse_args(base), tok, 5)
    copies = masks.prompt_copies(batch.ids, batch.prompt_lengths, arith)
    letters = set(arith.letters.tolist())
    assert not letters & set(arith.digits.tolist()) and arith.newline not in letters
    for r in range(len(batch.ids)):
        row, plen = batch.ids[r].tolist(), int(batch.prompt_lengths[r])
        end = row.index(EOS_ID, plen)
        want = [i for i in range(plen, end) if row[i] in letters and row[i] in row[:plen]]
        assert copies[r].nonzero()[:, 0].tolist() == want
        assert want, "every long answer restates a word of its prompt"
        words = tok.decode([row[i] for i in want])
        assert any(w.strip() and w.strip() in tok.decode(row[:plen]) for w in words.split())
    args = options.parse_args(base + ["--frontier-at-results", "0.3", "--frontier-at-lines", "0.3",
                                "--frontier-at-copies", "0.4"])
    cuts = masks.frontier_cuts(args, batch.ids, batch.prompt_lengths, arith, 5)
    kinds = torch.stack([(cuts & masks.result_starts(batch.ids, batch.prompt_lengths, arith)).any(1),
                         (cuts & masks.line_starts(batch.ids, batch.prompt_lengths, arith)).any(1),
                         (cuts & copies).any(1)])
    at_copies = kinds[2] & ~kinds[0] & ~kinds[1]
    assert bool(at_copies.any()) and torch.equal(cuts[at_copies], copies[at_copies])
    assert bool(cuts.any(1).all())                           # the shares add up to every row


def test_arithmetic_probe_counts_every_computed_result_once():
    """training.probe: one case per `=` result of each held-out answer (the `#### N` line is
    not one), grouped by the operation before it; right <= total."""
    import re

    from vllm_elastic.oracles.llada import ReferenceLLaDA
    from vllm_elastic.tools.checkpoint import build_tokenizer, tiny_config
    from vllm_elastic.tools.training import probe

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    model = ReferenceLLaDA(tiny_config(len(tok), 1, 32, 1, mlp=64)).eval()
    tally = probe.results_by_operation(model, tok, n=4)
    want = {"sum": 0, "difference": 0, "product": 0}
    for p in long_data.test_problem_list(4):
        for op in re.findall(r"\d+([-+*])\d+=\d+", p.solution):
            want[probe.OPERATIONS[op]] += 1
    assert {k: v[1] for k, v in tally.items()} == want and sum(want.values()) > 8
    assert all(0 <= right <= total for right, total in tally.values())


def test_token_probe_counts_every_answer_token_once_by_category():
    """training.probe --tokens: every answer token (its EOS included) once, under its kind;
    two `stop` tokens per answer (`####` and the EOS), the result digits as result_digits finds
    them; right <= total."""
    from vllm_elastic.oracles.llada import ReferenceLLaDA
    from vllm_elastic.tools.checkpoint import build_tokenizer, tiny_config
    from vllm_elastic.tools.training import data, probe

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    model = ReferenceLLaDA(tiny_config(len(tok), 1, 32, 1, mlp=64)).eval()
    tally = probe.tokens_by_category(model, tok, n=4)
    problems = long_data.test_problem_list(4)
    answers = {}
    for p in problems:
        answers.setdefault(p.template, []).append(data.answer_ids(tok, p.solution))
    assert set(tally) == set(answers)
    for kind, rows in answers.items():
        assert sum(t for _, t in tally[kind].values()) == sum(len(a) for a in rows)
        assert tally[kind]["stop"][1] == 2 * len(rows)
        assert all(0 <= right <= total for right, total in tally[kind].values())
    results = 0
    for p in problems:
        prompt = data.chat_prompt_ids(tok, p.question)
        ids = torch.tensor([prompt + data.answer_ids(tok, p.solution)])
        results += int(masks.result_digits(ids, torch.tensor([len(prompt)]), masks.arith_tokens(tok)).sum())
    assert sum(tally[k]["result"][1] for k in tally) == results > 0


def test_free_probe_finds_the_first_slip(monkeypatch):
    """training.probe --free: a decoder that writes the true answer is exact everywhere; one
    that ends after the first line slips `stop_early` there; one that changes the first result
    digit slips on a `result`; a real (random) model is accounted once per problem."""
    from vllm_elastic.oracles.llada import ReferenceLLaDA
    from vllm_elastic.tools.checkpoint import build_tokenizer, tiny_config
    from vllm_elastic.tools.training import data, probe

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    model = ReferenceLLaDA(tiny_config(len(tok), 1, 32, 1, mlp=64)).eval()
    eos, newline = tok.eos_token_id, masks.arith_tokens(tok).newline
    problems = long_data.test_problem_list(3)
    truth = {tuple(data.chat_prompt_ids(tok, p.question)): data.answer_ids(tok, p.solution)
             for p in problems}

    def decoder(edit):
        return lambda _model, prompt, params: edit(list(truth[tuple(prompt)])) + \
            [eos] * params.gen_length

    def stop_after_first_line(answer):
        cut = answer.index(newline) + 1
        return answer[:cut] + tok.encode("#### 1", add_special_tokens=False) + [eos]

    def wrong_first_result(answer):
        ids = torch.tensor([[0] + answer])
        first = int(masks.result_digits(ids, torch.tensor([1]), masks.arith_tokens(tok))[0].nonzero()[0])
        digits = masks.arith_tokens(tok).digits.tolist()
        answer[first - 1] = digits[(digits.index(answer[first - 1]) + 1) % 10]
        return answer

    monkeypatch.setattr(probe, "generate", decoder(lambda a: a))
    got = probe.first_slips(model, tok, n=3, gen_length=320)
    assert got["exact"] == 3 and got["first_slip"] == {}
    assert got["lines_right_mean"] == round(sum(a.count(newline) for a in truth.values()) / 3, 2)
    monkeypatch.setattr(probe, "generate", decoder(stop_after_first_line))
    got = probe.first_slips(model, tok, n=3, gen_length=0)
    assert got["exact"] == 0 and got["first_slip"] == {"stop_early": 3}
    assert got["lines_right_mean"] == 1
    monkeypatch.setattr(probe, "generate", decoder(wrong_first_result))
    assert probe.first_slips(model, tok, n=3)["first_slip"] == {"result": 3}
    monkeypatch.undo()
    real = probe.first_slips(model, tok, n=3, gen_length=16)
    assert real["exact"] + sum(real["first_slip"].values()) == 3
    assert sum(total for _, total in real["by_kind"].values()) == 3



def test_lookahead_probe_counts_threshold_commits_ahead_of_the_frontier(monkeypatch):
    """training.probe --lookahead: a model that knows the true canvas commits every window
    position after each cut and none of them wrong; one that always says EOS with certainty
    commits them all and is wrong wherever the canvas is not EOS; a flat one commits nothing."""
    from types import SimpleNamespace

    from vllm_elastic.tools.checkpoint import build_tokenizer
    from vllm_elastic.tools.training import data, probe

    tok = build_tokenizer(long_data.tokenizer_corpus(300), 512)
    eos, vocab, gen = tok.eos_token_id, len(tok), 320
    problems = long_data.test_problem_list(2)
    monkeypatch.setattr(probe.long_data, "test_problem_list", lambda n: problems[:n])
    canvases, cut_lists = [], []
    for p in problems:
        prompt, answer = data.chat_prompt_ids(tok, p.question), data.answer_ids(tok, p.solution)
        canvases.append(torch.tensor(prompt + answer + [eos] * (gen - len(answer))))
        cut_lists.append(range(len(prompt), len(prompt) + len(answer) + 1, 4))

    class Fake:
        config = SimpleNamespace(eos_token_id=eos)

        def __init__(self, guess):
            self.guess = guess

        def __call__(self, batch):
            return torch.stack([self.guess(row) for row in batch]) * 50.0

    def truth(row):  # the canvas whose prompt the row starts with
        return next(c for c, cuts in zip(canvases, cut_lists)
                    if len(c) == len(row) and torch.equal(c[:cuts[0]], row[:cuts[0]]))

    def one_hot(ids):
        return torch.nn.functional.one_hot(ids, vocab).float()

    right = probe.lookahead_commits(Fake(lambda row: one_hot(truth(row))), tok, 2, gen, stride=4)
    same = probe.lookahead_commits(Fake(lambda row: one_hot(torch.full_like(row, eos))),
                                   tok, 2, gen, stride=4)
    flat = probe.lookahead_commits(Fake(lambda row: torch.zeros(len(row), vocab)), tok, 2, gen)
    windows = [(c, range(s + 1, min(s + 32, len(c)))) for c, cuts in zip(canvases, cut_lists)
               for s in cuts]
    ahead = sum(len(w) for _, w in windows)
    not_eos = sum(int(c[q] != eos) for c, w in windows for q in w)
    assert right["cuts"] == len(windows) and right["ahead"] == ahead > 0
    assert right["commits"] == ahead and right["wrong"] == 0
    assert same["commits"] == ahead and same["wrong"] == not_eos > 0
    assert sum(same["wrong_by_category"].values()) == sum(same["wrong_by_kind"].values()) == not_eos
    assert flat["commits"] == flat["wrong"] == 0
