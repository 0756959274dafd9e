"""The calibration file: one JSON object per line, the prompt in exactly one of three forms
and optionally the expected answer.

    {"prompt": "text as the model sees it"}
    {"messages": [{"role": "user", "content": "..."}]}   (the model's chat template applied)
    {"prompt_token_ids": [2, 3, ...]}
    ... plus "answer": "42" (or 42) to score accuracy as well as agreement

Every problem is refused with its line number: not JSON, not an object, no prompt or more
than one form, an unknown key, a wrong type. An empty file is refused too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

PROMPT_FORMS = ("prompt", "messages", "prompt_token_ids")
KEYS = PROMPT_FORMS + ("answer",)


class PromptFileError(ValueError):
    pass


@dataclass(frozen=True)
class Calibration:
    token_ids: list[int]
    answer: str | None


def read_prompts(path: str, tokenizer) -> list[Calibration]:
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise PromptFileError(f"--prompts {path}: {e.strerror}") from None
    items = [_parse(path, n, line, tokenizer) for n, line in enumerate(lines, 1) if line.strip()]
    if not items:
        raise PromptFileError(f"--prompts {path} holds no prompts (one JSON object per line: "
                              f"{{\"prompt\": ...}}, {{\"messages\": ...}} or "
                              f"{{\"prompt_token_ids\": ...}}, optionally \"answer\")")
    return items


def _parse(path: str, n: int, line: str, tokenizer) -> Calibration:
    where = f"{path} line {n}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(item, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(item).__name__}")
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise PromptFileError(f"{where}: unknown key(s) {unknown}; allowed: {list(KEYS)}")
    forms = [k for k in PROMPT_FORMS if k in item]
    if len(forms) != 1:
        raise PromptFileError(f"{where}: needs exactly one of {list(PROMPT_FORMS)}, got "
                              f"{forms or 'none'}")
    answer = item.get("answer")
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int))):
        raise PromptFileError(f"{where}: answer must be a string or an integer")
    return Calibration(_token_ids(where, forms[0], item[forms[0]], tokenizer),
                       None if answer is None else str(answer).strip())


def _token_ids(where: str, form: str, value, tokenizer) -> list[int]:
    if form == "prompt_token_ids":
        if not (isinstance(value, list) and value and all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)):
            raise PromptFileError(f"{where}: prompt_token_ids must be a non-empty list of "
                                  f"token ids")
        return value
    if form == "prompt":
        if not (isinstance(value, str) and value):
            raise PromptFileError(f"{where}: prompt must be a non-empty string")
        return tokenizer(value, add_special_tokens=False)["input_ids"]
    if not (isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in value)):
        raise PromptFileError(f"{where}: messages must be a non-empty list of "
                              f"{{\"role\", \"content\"}} objects")
    return list(tokenizer.apply_chat_template(value, add_generation_prompt=True, tokenize=True,
                                              return_dict=False))


def extract_answer(text: str) -> str | None:
    """What an answer is compared with: the text after the last '####' (GSM8K's convention)
    up to the first blank, else the last number in the text."""
    if "####" in text:
        tail = text.rsplit("####", 1)[1].split()
        return tail[0].rstrip(".").replace(",", "") if tail else None
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return numbers[-1].replace(",", "") if numbers else None
