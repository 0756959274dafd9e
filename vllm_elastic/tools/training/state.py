"""What a training run leaves on disk: the exported checkpoint, the resumable state, the log."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil

import torch

from vllm_elastic.oracles.llada import ReferenceLLaDA
from vllm_elastic.tools.checkpoint import save_checkpoint


def export(model: ReferenceLLaDA, tokenizer, out_dir: str) -> None:
    """The shipped checkpoint (bf16), written to a temporary folder then moved into place."""
    tmp = out_dir.rstrip("/") + ".export-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, model.config, model.state_dict(), tokenizer, dtype=torch.bfloat16)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    shutil.rmtree(tmp, ignore_errors=True)


def save_state(path: str, model, optimizer, step: int, elapsed: float, tokens: int,
               next_eval: float, gen: torch.Generator, args: argparse.Namespace) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "elapsed": elapsed, "tokens": tokens, "next_eval": next_eval,
             "torch_rng": torch.get_rng_state(), "mask_rng": gen.get_state(),
             "python_rng": random.getstate(), "args": vars(args)}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def log_position(path: str) -> tuple[int, float, int]:
    """(step, elapsed seconds, tokens) of the last training record of a log, or zeros."""
    last = {"step": 0, "elapsed_s": 0.0, "tokens": 0}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip() and (rec := json.loads(line))["type"] == "train":
                    last = rec
    return last["step"], float(last["elapsed_s"]), last["tokens"]


def truncate_log(path: str, step: int) -> None:
    """Drop log records past the resumed step (they will be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(keep)
