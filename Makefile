# Two entry points, both from a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install demo up test test-frameworks lint fmt bench images clean

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
	$(PY) -m pytest -q -rs --durations=20

# The RL frameworks' own code driving our plug-ins, one venv per framework (their pins conflict):
# .venvs/<framework>, built from tests/frameworks/<framework>/{requirements,framework}.txt with
# the CPU torch; the framework itself goes in with --no-deps (no vLLM, DeepSpeed, flash-attn).
# --no-compile: Python compiles only what is imported, not all of torch.
FRAMEWORKS := verl openrlhf trl trl_prm
FW_VENVS ?= .venvs

$(FW_VENVS)/%/.installed-stamp: tests/frameworks/%/requirements.txt tests/frameworks/%/framework.txt pyproject.toml
	rm -rf $(FW_VENVS)/$*
	$(PYTHON) -m venv $(FW_VENVS)/$*
	$(FW_VENVS)/$*/bin/python -m pip install -q --no-compile torch==2.13.0 -r tests/frameworks/$*/requirements.txt -e .
	$(FW_VENVS)/$*/bin/python -m pip install -q --no-compile --no-deps -r tests/frameworks/$*/framework.txt
	# Compile what the services import once, here, not against a test's start-up deadline.
	$(FW_VENVS)/$*/bin/python -c "import torch, transformers, codeprm.cli, codeprm.services.prm_server.app, codeprm.services.executor.app"
	touch $@

test-frameworks: $(FRAMEWORKS:%=$(FW_VENVS)/%/.installed-stamp)
	@for fw in $(FRAMEWORKS); do \
		echo "== $$fw: $$(sed -n 's/^\([a-zA-Z]\)/\1/p' tests/frameworks/$$fw/framework.txt)"; \
		$(FW_VENVS)/$$fw/bin/python -m pytest -q -rs -p no:cacheprovider tests/frameworks/$$fw || exit 1; \
	done

bench: install
	$(PY) bench/executor.py

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= codeprm
IMAGES := executor labeler prm-server trainer

# Container images (docker/*.Dockerfile) as $(REGISTRY)/<service>:$(VERSION); needs a Docker engine.
images:
	@docker info >/dev/null 2>&1 || { echo "make images: no Docker engine answers (docker info failed)"; exit 1; }
	@for image in $(IMAGES); do \
		echo "building $(REGISTRY)/$$image:$(VERSION)"; \
		docker build -f docker/$$image.Dockerfile -t $(REGISTRY)/$$image:$(VERSION) . || exit 1; \
	done

clean:
	rm -rf $(VENV) $(FW_VENVS) .mypy_cache .ruff_cache .pytest_cache
