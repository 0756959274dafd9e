# Every target sets up what it needs first (scripts/setup.sh is idempotent and quick when done).
VENV ?= $(HOME)/.cache/vllm-elastic/venv
PY := $(VENV)/bin/python
export VENV
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_USE_V2_MODEL_RUNNER := 0

.PHONY: setup test demo serve

setup:
	bash scripts/setup.sh

# The test suite (what CI runs).
test: setup
	$(PY) -m pytest -q tests

# The main job: offline batch generation with vllm.LLM on the bundled tiny model, full
# recompute beside a cache policy, ending with a short summary (examples/demo.py).
demo: setup
	$(PY) examples/demo.py

# OpenAI-compatible server on 127.0.0.1:8000 with the bundled model.
serve: setup
	$(VENV)/bin/vllm serve examples/models/llada-tiny-arith --host 127.0.0.1 --port 8000 --dtype float32
