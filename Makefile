# The two commands of the README: `make demo` and `make test`. Both create the virtualenv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make test` needs the dev tools and Ray (the Ray executor's tests start a local cluster).
TEST_EXTRAS ?= dev,ray,otel

.PHONY: demo test lint types unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q -U pip

$(BIN)/.installed-base: pyproject.toml | $(BIN)/python
	@echo "installing Shipyard into $(VENV) (first time: a minute or two)…"
	@$(BIN)/python -m pip install -q -e .
	@touch $@

$(BIN)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "installing Shipyard with [$(TEST_EXTRAS)] into $(VENV) (first time: a few minutes)…"
	@$(BIN)/python -m pip install -q -e '.[$(TEST_EXTRAS)]'
	@touch $@ $(BIN)/.installed-base

demo: $(BIN)/.installed-base
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python examples/demo.py

lint: $(BIN)/.installed-test
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

types: $(BIN)/.installed-test
	$(BIN)/mypy

unit: $(BIN)/.installed-test
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint types unit

bench: $(BIN)/.installed-test
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .shipyard .pytest_cache .mypy_cache .ruff_cache
