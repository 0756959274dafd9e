# Every target sets up what it needs first (scripts/setup.sh is idempotent and quick when done).
VENV ?= $(HOME)/.cache/vllm-elastic/venv
PY := $(VENV)/bin/python
export VENV
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_USE_V2_MODEL_RUNNER := 0

.PHONY: setup test demo demo-quick serve

setup:
	bash scripts/setup.sh

# The test suite (what CI runs).
test: setup
	$(PY) -m pytest -q tests

# The main job: Elastic-Cache beside full recompute and Fast-dLLM's dual cache on the shipped
# long-answer model, 24 held-out problems at gen 512, one engine; a table and a PNG at the end.
demo: setup
	$(PY) examples/demo.py

# The same on the bundled tiny model at gen 64 (about a minute after set-up).
demo-quick: setup
	$(PY) examples/demo.py --quick

# OpenAI-compatible server on 127.0.0.1:8000 with the shipped long-answer model.
serve: setup
	$(VENV)/bin/vllm serve examples/models/llada-long-arith --host 127.0.0.1 --port 8000 --dtype float32
