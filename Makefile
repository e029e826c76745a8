# Set-up on a fresh machine is two commands: `make run` starts the bot, `make test` runs the suite.
# Both create .venv if it is missing and install what is needed; on a machine without an NVIDIA
# GPU, the CPU build of torch is installed first (a plain `pip install torch` pulls CUDA).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@if ! $(PY) -c "import torch" 2>/dev/null && ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "No NVIDIA GPU found: installing the CPU build of torch $(TORCH_VERSION)"; \
		if $(PY) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
			$(TORCH_CPU_INDEX)/ >/dev/null 2>&1; then \
			$(PIP) install --quiet "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) \
				--extra-index-url https://pypi.org/simple; \
		else \
			$(PIP) install --quiet "torch==$(TORCH_VERSION)"; \
		fi; \
	fi
	@$(PIP) install --quiet -e ".[test,ray]"
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) -m bot

test: $(STAMP)
	@HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	@$(VENV)/bin/ruff check bot cogs storage tests bench
	@$(VENV)/bin/mypy

bench: $(STAMP)
	@$(PY) bench/gpu.py $(if $(shell command -v nvidia-smi),,--smoke)
	@$(PY) bench/loop.py
	@$(PY) bench/history.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
