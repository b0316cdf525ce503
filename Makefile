# The two commands: `make run` (set up everything and serve) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export DEEPREC_DATABASE_URL ?= sqlite:///./var/deeprec.db

.PHONY: run test test-fast install lint bench clean

$(BIN)/deeprec: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/deeprec

run: install
	$(BIN)/deeprec db upgrade
	$(BIN)/deeprec demo-data --if-empty
	$(BIN)/deeprec train --model default --if-missing --quick-first
	$(BIN)/deeprec serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check app tests bench

test: lint
	$(BIN)/python -m pytest -q

test-fast: install  # everything but the tests marked slow (processes, browsers, fuzzing, ML-100K)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf var .pytest_cache .ruff_cache
