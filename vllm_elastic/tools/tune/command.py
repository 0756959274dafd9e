"""The tune command: pick a cache setting for one model and task from calibration prompts.

    vllm-elastic tune MODEL --prompts calib.jsonl --min-agreement 0.95 \
        [--additional-config '{"diffusion": {...}}'] [--grid default|quick|FILE.json] \
        [--max-accuracy-drop 0.01] [--concurrency 1] [--out tune-out] [--resume]

Runs every candidate (candidates.py) through vLLM's engine over the prompts, on top of the
server defaults in --additional-config (the same JSON `vllm serve` takes), compares each with
full recompute, and prints as the last line of stdout the fastest setting whose share of
answers identical to full recompute's is at least --min-agreement (and whose accuracy, where
the file has answers, is at most --max-accuracy-drop below full recompute's), as the JSON to
pass to `vllm serve --additional-config`. OUT holds the table (tune.md), the rows
(tune.json), the frontier (tune.png), the pick (pick.json) and the request log that
--resume continues.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time

from vllm_elastic.params import DiffusionParamError, request_params, server_defaults
from vllm_elastic.tools.tune import frontier
from vllm_elastic.tools.tune.candidates import REFERENCE, load_candidates
from vllm_elastic.tools.tune.prompts import PromptFileError, read_prompts
from vllm_elastic.tools.tune.runs import RunLog, file_digest, run_candidate, weights_digest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vllm-elastic tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="checkpoint directory (as for `vllm serve`)")
    ap.add_argument("--prompts", required=True, help="calibration JSONL (see prompts.py)")
    ap.add_argument("--min-agreement", type=float, required=True,
                    help="share of answers token for token identical to full recompute's")
    ap.add_argument("--max-accuracy-drop", type=float, default=None,
                    help="where the prompts have answers: accuracy at most this far below "
                         "full recompute's (0.01 = one point)")
    ap.add_argument("--additional-config", default="{}",
                    help="the server's --additional-config JSON (its diffusion defaults)")
    ap.add_argument("--grid", default="default", help="default, quick, or a JSON file")
    ap.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", default="tune-out")
    ap.add_argument("--resume", action="store_true", help="continue OUT/requests.jsonl")
    args = ap.parse_args(argv)
    if not 0.0 <= args.min_agreement <= 1.0:
        ap.error(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
    if args.concurrency < 1:
        ap.error(f"--concurrency must be >= 1, got {args.concurrency}")
    return args


def _setup(args: argparse.Namespace):
    """Everything checked before an engine starts: config, candidates, prompts."""
    from transformers import AutoTokenizer

    try:
        config = json.loads(args.additional_config)
        defaults = server_defaults(config)
        candidates = load_candidates(args.grid)
        gen = max(request_params(defaults, extra, 0.0, None).gen_length
                  for extra in candidates.values())
    except json.JSONDecodeError as e:
        raise SystemExit(f"--additional-config is not JSON: {e.msg}") from None
    except DiffusionParamError as e:
        raise SystemExit(f"parameter {e.param}: {e}") from None
    except ValueError as e:
        raise SystemExit(str(e)) from None
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        prompts = read_prompts(args.prompts, tokenizer)
    except PromptFileError as e:
        raise SystemExit(str(e)) from None
    return config, gen, candidates, prompts, tokenizer


# vLLM's CPU build reserves 92% of the machine's memory for KV pages unless
# VLLM_CPU_KVCACHE_SPACE (GiB) says otherwise, and the pages fill that reservation as requests
# cycle through them: a long tune grew to 21 GiB and swapped. The tune needs only
# `concurrency` canvases; it reserves those (a generous per-token bound) unless the user set it.
_KV_ROW_FACTOR = 4  # a full page row: K, V, Q and the layer input, each at most hidden_size


def _checkpoint_config(model: str) -> dict:
    """The checkpoint's config.json, {} where it cannot be read."""
    try:
        with open(os.path.join(model, "config.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _reserve_cpu_kv(args: argparse.Namespace, max_model_len: int) -> None:
    from vllm.platforms import current_platform

    if os.environ.get("VLLM_CPU_KVCACHE_SPACE") or not current_platform.is_cpu():
        return
    config = _checkpoint_config(args.model)
    text = config.get("text_config", config)
    hidden = text.get("hidden_size") or text.get("d_model")
    layers = text.get("num_hidden_layers") or text.get("n_layers")
    if not hidden or not layers:
        return  # unknown shape: vLLM's own default
    row_bytes = _KV_ROW_FACTOR * hidden * layers * 4  # fp32, the widest CPU dtype
    need = 2 * (args.concurrency + 1) * max_model_len * row_bytes  # x2: block rounding, slack
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, -(-need // 2 ** 30)))


def _engine(args: argparse.Namespace, config: dict, gen_length: int, prompts):
    from vllm import LLM

    longest = max(len(p.token_ids) for p in prompts) + gen_length
    _reserve_cpu_kv(args, longest)
    return LLM(model=args.model, dtype=args.dtype, max_model_len=longest,
               max_num_seqs=args.concurrency, additional_config=config)


def run_all(args, config, gen_length, candidates, prompts, log: RunLog) -> None:
    """Every candidate's missing requests, one engine for all (none if nothing is missing)."""
    from tqdm import tqdm

    todo = {name: log.missing(name, len(prompts)) for name in candidates}
    total = sum(len(v) for v in todo.values())
    if not total:
        return
    llm = _engine(args, config, gen_length, prompts)
    with tqdm(total=total, desc="tune", unit="request", file=sys.stderr) as bar:
        for name, extra in candidates.items():
            bar.set_postfix_str(name)
            run_candidate(llm, name, extra, prompts, args.concurrency, log, bar.update)
    # Shut the engine down now: its processes log their exit to stdout, and the setting must
    # be stdout's last line.
    del llm
    gc.collect()


def _provenance(argv: list[str] | None) -> str:
    """The run's command, machine, model threads and date, read before any engine starts
    (the plugin sets its CPU thread binding then)."""
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    threads = (f"VLLM_CPU_OMP_THREADS_BIND={bind}" if bind else
               "the plugin's CPU default (one OpenMP thread per core, on every core) where "
               "it applies, else vLLM's")
    command = " ".join(["vllm-elastic", "tune", *(sys.argv[1:] if argv is None else argv)])
    return (f"Command: `{command}`\n\nMachine: {platform.machine()}, {os.cpu_count()} cores; "
            f"model threads: {threads}. Date: "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")


def main(argv: list[str] | None = None) -> dict:
    provenance = _provenance(argv)
    args = parse_args(argv)
    config, gen_length, candidates, prompts, tokenizer = _setup(args)
    header = {"model_sha256": weights_digest(args.model), "prompts_sha256":
              file_digest(args.prompts), "additional_config": config, "dtype": args.dtype}
    log = RunLog(os.path.join(args.out, "requests.jsonl"), header, args.resume)
    run_all(args, config, gen_length, candidates, prompts, log)
    reference = log.requests(REFERENCE, len(prompts))
    rows = [frontier.score(name, log.requests(name, len(prompts)), reference, prompts,
                           tokenizer.eos_token_id) for name in candidates]
    frontier.add_speedups(rows)
    picked = frontier.pick(rows, args.min_agreement, args.max_accuracy_drop)
    setting = {"diffusion": {**config.get("diffusion", {}), **picked["params"]}}
    _write(args, rows, picked, setting, provenance)
    print(json.dumps(setting))
    return setting


def _dtype(args: argparse.Namespace) -> str:
    """The dtype the engine ran the model in: --dtype, or for `auto` the checkpoint's (as
    `vllm serve` resolves it; a bf16 checkpoint runs in bf16 unless told otherwise). Tune in
    the dtype you serve in: the agreement of a cache setting depends on it."""
    if args.dtype != "auto":
        return args.dtype
    config = _checkpoint_config(args.model)
    found = config.get("torch_dtype") or config.get("dtype")
    return f"auto (the checkpoint's {found})" if found else "auto"


def _write(args: argparse.Namespace, rows: list[dict], picked: dict, setting: dict,
           provenance: str) -> None:
    target = f"agreement >= {args.min_agreement:.0%}" + (
        f", accuracy >= full recompute's - {args.max_accuracy_drop:.1%}"
        if args.max_accuracy_drop is not None else "")
    lines = [f"# Tune: {args.model}", "", provenance, "", f"{rows[0]['n']} calibration prompts "
             f"(`{args.prompts}`), {args.concurrency} at a time, model dtype "
             f"{_dtype(args)}. Target: {target}. Picked: "
             f"**{picked['candidate']}** ({picked['speedup']:.2f}x full recompute).", "",
             *([warning, ""] if (warning := frontier.caution(picked, args.min_agreement))
               else []),
             *frontier.table(rows, picked), "", "`vllm serve` with it: "
             f"`--additional-config '{json.dumps(setting)}'`", ""]
    with open(os.path.join(args.out, "tune.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(args.out, "tune.json"), "w") as f:
        json.dump({"rows": rows, "picked": picked["candidate"], "setting": setting}, f,
                  indent=1)
    with open(os.path.join(args.out, "pick.json"), "w") as f:
        json.dump(setting, f)
    print("\n".join(lines), file=sys.stderr)
    if not frontier.plot(rows, picked, os.path.join(args.out, "tune.png")):
        print("matplotlib is not installed: no tune.png", file=sys.stderr)
