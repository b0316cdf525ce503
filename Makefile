# The two commands: `make run` (set up everything and serve) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export DEEPREC_DATABASE_URL ?= sqlite:///./var/deeprec.db

.PHONY: run test test-fast install lock lint bench clean

# The install is locked: requirements.lock holds the service's dependencies, requirements-dev.lock adds the
# dev and plot extras; `make lock` refreshes both from pyproject.toml (and constraints.txt, which pins torch).
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
# torch comes from its own wheel index: CPU builds by default, a CUDA machine names its index, e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126; the index's last path segment is the build (+cpu).
# Where the index cannot be reached (only the package registry is), pip takes the locked torch version from
# its configured sources instead, after a probe of at most 5 s, so no install waits on the index.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(LOCK))
TORCH_INDEX_UP = $(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
	'$(TORCH_INDEX_URL)/torch/' 2>/dev/null
TORCH_INDEX_DOWN_NOTE = echo "$(TORCH_INDEX_URL) cannot be reached: torch $(TORCH_VERSION) comes from pip's" \
	"configured index and find-links (on PyPI alone that is the CUDA build)"

$(BIN)/deeprec: pyproject.toml $(LOCK) $(DEV_LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	if $(TORCH_INDEX_UP); then \
	  $(BIN)/pip install -c $(DEV_LOCK) --extra-index-url '$(TORCH_INDEX_URL)' \
	    'torch==$(TORCH_VERSION)+$(notdir $(TORCH_INDEX_URL))'; \
	else $(TORCH_INDEX_DOWN_NOTE); $(BIN)/pip install -c $(DEV_LOCK) 'torch==$(TORCH_VERSION)'; fi
	$(BIN)/pip install --no-deps -r $(DEV_LOCK)
	$(BIN)/pip install --no-deps -e .
	$(BIN)/pip check
	touch $@

install: $(BIN)/deeprec

# Re-resolve both locks from pyproject.toml, keeping the current pins that still fit;
# `make lock LOCK_ARGS=--upgrade` moves every package to its newest release (torch stays at constraints.txt).
LOCK_ARGS ?=
lock:
	test -x $(BIN)/pip || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q 'pip-tools>=7.4'
	if $(TORCH_INDEX_UP); then extra='--extra-index-url=$(TORCH_INDEX_URL)'; else extra=; $(TORCH_INDEX_DOWN_NOTE); fi; \
	compile="$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links $$extra $(LOCK_ARGS)"; \
	export CUSTOM_COMPILE_COMMAND="make lock"; \
	$$compile -c constraints.txt -o $(LOCK) pyproject.toml && \
	sed -i -E 's/^(torch==[^+]+)[+].*/\1/' $(LOCK) && \
	$$compile --extra dev --extra plot -c $(LOCK) -o $(DEV_LOCK) pyproject.toml && \
	sed -i -E 's/^(torch==[^+]+)[+].*/\1/' $(DEV_LOCK)
	if grep -qE '^(nvidia-|triton)' $(LOCK) $(DEV_LOCK); then echo "the locks hold a CUDA torch's packages:" \
	  "lock where $(TORCH_INDEX_URL) (a CPU index) is reachable, or where pip finds CPU wheels"; exit 1; fi

run: install
	$(BIN)/deeprec db upgrade
	$(BIN)/deeprec demo-data --if-empty
	$(BIN)/deeprec train --model default --if-missing --quick-first
	$(BIN)/deeprec serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check app tests bench
	$(BIN)/python -m mypy

test: lint
	$(BIN)/python -m pytest -q

test-fast: install  # everything but the tests marked slow (processes, browsers, fuzzing, ML-100K)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf var .pytest_cache .ruff_cache
