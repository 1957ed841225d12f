# The two commands of the README: `make demo` and `make test`. Both create the virtualenv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev

.PHONY: demo test lint types unit bench clean venv

$(BIN)/.installed-$(EXTRAS): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Shipyard and its dependencies into $(VENV) (first time: a minute or two)…"
	@$(BIN)/python -m pip install -q -U pip
	@$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

venv: $(BIN)/.installed-$(EXTRAS)

demo: venv
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

types: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint types unit

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .shipyard .pytest_cache .mypy_cache .ruff_cache
