"""`vllm serve` under one CPU configuration: tokens/s and CPU seconds per process (API server,
engine core, worker) while held-out long-model chat requests run over HTTP.

    for cfg in "new default" "old default"; do for c in 1 16; do
        python benchmarks/bench_serve_cpu.py "$cfg" $c; done; done

old default = VLLM_CPU_OMP_THREADS_BIND=auto (vLLM's own binding: the model on one core per
rank, one reserved); new default = nothing set (the plugin's CPU default). Requests: the first
`--n` held-out problems, gen 512, window 16 + threshold 0.9, full recompute, `concurrency` at
a time, after one warm-up request. Prints one RESULT line (JSON); threads_serve.md collects
them. The server runs on 127.0.0.1 and is stopped by its process group.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models",
                     "llada-long-arith")
XARGS = {"gen_length": 512, "schedule": "window", "window_length": 16, "threshold": 0.9}


def start_server(config: str) -> tuple[subprocess.Popen, str]:
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_OMP_THREADS_BIND"}
    env.update(VLLM_CPU_KVCACHE_SPACE="2", VLLM_LOGGING_LEVEL="ERROR")
    if config == "old default":
        env["VLLM_CPU_OMP_THREADS_BIND"] = "auto"
    vllm = os.path.join(os.path.dirname(sys.executable), "vllm")
    proc = subprocess.Popen([vllm, "serve", MODEL, "--host", "127.0.0.1", "--port", str(port),
                             "--dtype", "float32"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:  # poll until healthy (an engine start takes ~35 s)
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(1)


def chat(url: str, question: str) -> dict:
    import requests

    body = {"model": MODEL, "messages": [{"role": "user", "content": question}],
            "vllm_xargs": XARGS}
    return requests.post(url + "/v1/chat/completions", json=body, timeout=600).json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", choices=("new default", "old default"))
    ap.add_argument("concurrency", type=int)
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    import psutil
    from bench_threads import cpu_seconds

    from vllm_elastic.tools.training.long_data import test_problem_list

    questions = [p.question for p in test_problem_list(args.n)]
    proc, url = start_server(args.config)
    try:
        chat(url, questions[0])  # warm-up
        root = psutil.Process(proc.pid)
        procs = [root] + root.children(recursive=True)
        before, start = cpu_seconds(procs, proc.pid, "api server"), time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            replies = list(pool.map(lambda q: chat(url, q), questions))
        wall = time.perf_counter() - start
        after = cpu_seconds(procs, proc.pid, "api server")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    print("RESULT", json.dumps({
        "config": args.config, "concurrency": args.concurrency,
        "tokens_per_s": round(tokens / wall, 1), "wall_s": round(wall, 1),
        "cpu_s": {k: round(after[k] - before.get(k, 0.0), 1) for k in after}}), flush=True)


if __name__ == "__main__":
    main()
