"""Ask a served LLaDA-V about an image: an OpenAI chat completion with a base64 data-URL image.

    # a LLaDA-V checkpoint: the released one (GSAI-ML/LLaDA-V), or a random tiny one here
    python -m vllm_elastic.tools.llada_v_checkpoint /tmp/llada-v
    vllm serve /tmp/llada-v --host 127.0.0.1 --port 8000 --dtype float32 --max-model-len 2048 \\
        --additional-config '{"diffusion": {"gen_length": 32, "block_length": 32, "steps": 16}}'
    python examples/llada_v_image.py --url http://127.0.0.1:8000

A random checkpoint answers gibberish; the point is the path (image -> tiles -> SigLIP ->
projector -> canvas -> diffusion decoding). Per-request decoding settings go in `vllm_xargs`,
e.g. `--xargs '{"cache_policy": "elastic", "schedule": "window"}'`.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os

import requests

SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the "
          "visual content that the user provides, and assist the user with a variety of tasks "
          "using natural language.")  # the official LLaDA-V conversation's system message


def data_url(path: str) -> str:
    kind = mimetypes.guess_type(path)[0] or "image/png"
    with open(path, "rb") as f:
        return f"data:{kind};base64," + base64.b64encode(f.read()).decode()


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--image", default=os.path.join(here, "data", "chart.png"))
    ap.add_argument("--question", default="Which region has the highest sales?")
    ap.add_argument("--xargs", default="{}", help="diffusion parameters for this request (JSON)")
    a = ap.parse_args()
    model = requests.get(a.url + "/v1/models", timeout=10).json()["data"][0]["id"]
    body = {"model": model, "temperature": 0.0, "vllm_xargs": json.loads(a.xargs),
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": [
                             {"type": "image_url", "image_url": {"url": data_url(a.image)}},
                             {"type": "text", "text": a.question}]}]}
    r = requests.post(a.url + "/v1/chat/completions", json=body, timeout=600)
    if r.status_code != 200:
        raise SystemExit(f"HTTP {r.status_code}: {r.text}")
    reply = r.json()
    print(reply["choices"][0]["message"]["content"])
    print("diffusion accounting:", reply.get("kv_transfer_params"))


if __name__ == "__main__":
    main()
