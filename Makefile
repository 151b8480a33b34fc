# Two entry points, both from a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install demo up test lint fmt bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch, pinned so pip never pulls a CUDA build on this machine.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/codeprm demo

up: install
	$(VENV)/bin/codeprm up

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q -rs

bench: install
	$(PY) bench/executor.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
