# sim-consistency — every target does its own set-up on a fresh clone.
#   make demo   run the main job (demo pipeline on the embedded digits data)
#   make test   run the test suite
# uv is used from PATH when present, otherwise bootstrapped from PyPI into .tools/.

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTHON ?= python3
SIMC_ROOT ?= $(CURDIR)/project_root
export UV_PYTHON_DOWNLOADS := never
# Byte-compile installed packages once (the machines set PYTHONDONTWRITEBYTECODE=1, which
# would otherwise make every process recompile torch, timm, … from source: ~15 s a start).
export UV_COMPILE_BYTECODE := 1
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint typecheck format sync clean-demo help

help:
	@echo "make demo   run the demo pipeline on wds/digits (SIMC_ROOT=$(SIMC_ROOT))"
	@echo "make test   run the test suite"
	@echo "make lint   ruff check + format check"
	@echo "make typecheck   mypy on the package"

.tools/bin/uv:
	@echo "uv not found on PATH: installing it from PyPI into .tools/"
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

sync: .venv/.synced

demo: sync
	$(UV) run --frozen python scripts/demo.py --project_root "$(SIMC_ROOT)"

test: sync
	$(UV) run --frozen python -m pytest

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: sync
	$(UV) run --frozen mypy

format: sync
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

clean-demo:
	rm -rf "$(SIMC_ROOT)"
