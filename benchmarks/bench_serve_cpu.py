"""`vllm serve` under one CPU configuration: per-process CPU seconds while 16 long-model chat
requests (gen 512, window 16 + threshold 0.9, full recompute) run at concurrency C over HTTP."""
import concurrent.futures as cf, json, os, socket, subprocess, sys, time
import psutil, requests
label, conc = sys.argv[1], int(sys.argv[2])
model = "/work/main/examples/models/llada-long-arith"
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "ERROR"}
env.pop("VLLM_CPU_OMP_THREADS_BIND", None)
if label == "old default":
    env["VLLM_CPU_OMP_THREADS_BIND"] = "auto"
proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "vllm"), "serve", model, "--host", "127.0.0.1",
                         "--port", str(port), "--dtype", "float32"], env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, start_new_session=True)
url = f"http://127.0.0.1:{port}"
try:
    while True:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200: break
        except requests.ConnectionError: pass
        time.sleep(1)
    sys.path.insert(0, "/work/main")
    from vllm_elastic.tools.training.long_data import test_problem_list
    qs = [p.question for p in test_problem_list(16)]
    body = lambda q: {"model": model, "messages": [{"role": "user", "content": q}],
                      "vllm_xargs": {"gen_length": 512, "schedule": "window", "window_length": 16, "threshold": 0.9}}
    requests.post(url + "/v1/chat/completions", json=body(qs[0]), timeout=300)  # warm-up
    root = psutil.Process(proc.pid); procs = [root] + root.children(recursive=True)
    def role(p):
        c = " ".join(p.cmdline()); return "api server" if p.pid == proc.pid else "engine core" if "EngineCore" in c else "worker" if "Worker" in c else "other"
    def cpu():
        out = {}
        for p in procs:
            t = p.cpu_times(); out[role(p)] = out.get(role(p), 0) + t.user + t.system
        return out
    c0, t0 = cpu(), time.perf_counter()
    with cf.ThreadPoolExecutor(conc) as ex:
        res = list(ex.map(lambda q: requests.post(url + "/v1/chat/completions", json=body(q), timeout=600).json(), qs))
    wall = time.perf_counter() - t0; c1 = cpu()
    tokens = sum(r["usage"]["completion_tokens"] for r in res)
    print("RESULT", json.dumps({"config": label, "concurrency": conc, "tokens_per_s": round(tokens / wall, 1), "wall_s": round(wall, 1),
          "cpu_s": {k: round(c1[k] - c0.get(k, 0), 1) for k in c1}}), flush=True)
finally:
    os.killpg(proc.pid, 15); proc.wait(timeout=60)
