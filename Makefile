# Set-up on a fresh machine is two commands: `make run` starts the bot, `make test` runs the suite.
# Both create .venv if it is missing and install the exact versions of requirements.lock; torch
# comes first, at the version the project is tested with: the CPU build on a machine without an
# NVIDIA GPU (a plain `pip install torch` pulls the CUDA build, several GB), and on a machine with
# one the newest CUDA build its driver supports (scripts/torch_index.py reads `nvidia-smi`): PyPI's
# torch is built for the newest CUDA, and on an older driver it sees no GPU at all.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
LOCK := requirements.lock
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The CUDA builds of torch $(TORCH_VERSION) to choose from; TORCH_INDEX=URL skips the choice.
TORCH_CUDA_BUILDS ?= cu126 cu128 cu130
TORCH_INDEX ?=
UV_VERSION ?= 0.13.9
PYTEST_ARGS ?=
# `make test` spreads the suite over the machine's cores (pytest-xdist), at most this many workers
# (each holds a few tiny pipelines and starts bots of its own); PYTEST_WORKERS=0 runs it in one.
PYTEST_WORKERS ?= 4
# torch's CUDA runtime comes with the torch build installed first, never from the lock.
CUDA_RUNTIME := ^(nvidia-|cuda-|triton)

.PHONY: install run doctor test lint typecheck bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		if ! $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then \
			index="$(TORCH_INDEX)"; \
			if [ -z "$$index" ]; then index=$$($(PY) scripts/torch_index.py $(TORCH_CUDA_BUILDS)) || exit 1; fi; \
			echo "NVIDIA GPU found: installing torch $(TORCH_VERSION) from $$index"; \
			$(PIP) install --quiet --force-reinstall "torch==$(TORCH_VERSION)" --index-url $$index \
				--extra-index-url https://pypi.org/simple || exit 1; \
		fi; \
	elif ! $(PY) -c "import torch" 2>/dev/null; then \
		echo "No NVIDIA GPU found: installing the CPU build of torch $(TORCH_VERSION)"; \
		if $(PY) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
			$(TORCH_CPU_INDEX)/ >/dev/null 2>&1; then \
			$(PIP) install --quiet "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) \
				--extra-index-url https://pypi.org/simple; \
		else \
			$(PIP) install --quiet "torch==$(TORCH_VERSION)"; \
		fi; \
	fi
	@$(PIP) install --quiet -r $(LOCK)
	@$(PIP) install --quiet --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) -m bot

doctor: $(STAMP)
	@$(PY) -m bot doctor

test: $(STAMP)
	@HF_HUB_OFFLINE=1 $(PY) -m pytest $(if $(filter 0,$(PYTEST_WORKERS)),,--numprocesses auto \
		--maxprocesses $(PYTEST_WORKERS)) $(PYTEST_ARGS)

lint: $(STAMP)
	@$(VENV)/bin/ruff check bot cogs storage web tests bench scripts
	@$(VENV)/bin/mypy

bench: $(STAMP)
	@$(PY) bench/gpu.py $(if $(shell command -v nvidia-smi),,--smoke)
	@$(PY) bench/loop.py
	@$(PY) bench/history.py
	@$(PY) bench/gallery.py

# Refresh requirements.lock on purpose (new releases, a changed pyproject.toml): every package the
# project and its test and ray extras need, at exact versions, for any platform, torch pinned.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet "uv==$(UV_VERSION)"
	@echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-pin.txt
	@$(VENV)/bin/uv pip compile pyproject.toml --quiet --extra test --extra ray --universal \
		--python-version 3.11 --constraint $(VENV)/torch-pin.txt --output-file $(LOCK) \
		$$($(VENV)/bin/uv pip compile pyproject.toml --quiet --extra test --extra ray --universal \
			--python-version 3.11 --constraint $(VENV)/torch-pin.txt --no-header --no-annotate \
			| grep -E '$(CUDA_RUNTIME)' | cut -d= -f1 | sed 's/^/--no-emit-package /')
	@echo "wrote $(LOCK)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
