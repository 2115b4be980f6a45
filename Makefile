# dvstore: `make demo` and `make test` work on a fresh machine with only Python.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-deep lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-deep: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "slow or not slow" --timeout 3600

lint: $(STAMP)
	$(BIN)/ruff check dvstore tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy dvstore

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis
