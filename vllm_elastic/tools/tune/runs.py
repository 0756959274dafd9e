"""Running the candidates through vLLM's engine (`vllm.LLM`, the path `vllm serve` uses), one
request log for all of them so an interrupted tune resumes where it stopped.

The log (OUT/requests.jsonl) starts with a header: the weights' digest, the calibration file's
digest and the server defaults. A log written for anything else is refused, never mixed in.
Each later line is one finished request: candidate, prompt index, parameters, tokens, text,
the engine's accounting and its seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable

from vllm_elastic.tools.tune.prompts import Calibration


def weights_digest(model: str) -> str:
    """sha256 of the checkpoint's weight files: a resumed run must measure the same model."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(model)):
        if name.endswith(".safetensors"):
            with open(os.path.join(model, name), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def answer_tokens(token_ids: list[int], eos_id: int) -> list[int]:
    """What the user receives as answer tokens: everything before the first EOS."""
    return token_ids[: token_ids.index(eos_id)] if eos_id in token_ids else list(token_ids)


class RunLog:
    """The request log; `done[(candidate, index)]` holds the finished requests."""

    def __init__(self, path: str, header: dict, resume: bool) -> None:
        self.path, self.done = path, {}
        if resume and os.path.exists(path):
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            if lines and lines[0] != header:
                differ = sorted(k for k in header if lines[0].get(k) != header[k])
                raise SystemExit(f"--resume: {path} was written for another "
                                 f"{', '.join(differ)}; move it away or drop --resume")
            self.done = {(r["candidate"], r["index"]): r for r in lines[1:]}
        if not self.done:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as f:
                f.write(json.dumps(header) + "\n")

    def missing(self, name: str, n: int) -> list[int]:
        return [i for i in range(n) if (name, i) not in self.done]

    def add(self, records: list[dict]) -> None:
        with open(self.path, "a") as f:
            for r in records:
                self.done[(r["candidate"], r["index"])] = r
                f.write(json.dumps(r) + "\n")

    def requests(self, name: str, n: int) -> list[dict]:
        return [self.done[(name, i)] for i in range(n)]


def run_candidate(llm, name: str, extra: dict, prompts: list[Calibration], concurrency: int,
                  log: RunLog, advance: Callable[[int], None]) -> None:
    """The candidate's requests the log lacks, `concurrency` at a time, each batch logged as
    it finishes; `advance(k)` after each (a progress bar)."""
    from vllm import SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=None, extra_args=dict(extra))
    todo = log.missing(name, len(prompts))
    for at in range(0, len(todo), concurrency):
        batch = todo[at: at + concurrency]
        start = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": prompts[i].token_ids} for i in batch], sp,
                            use_tqdm=False)
        seconds = (time.perf_counter() - start) / len(batch)  # a batch's time, shared evenly
        log.add([{"candidate": name, "index": i, "params": extra, "text": o.outputs[0].text,
                  "token_ids": list(o.outputs[0].token_ids),
                  "accounting": o.kv_transfer_params["diffusion"], "seconds": seconds}
                 for i, o in zip(batch, outs)])
        advance(len(batch))
