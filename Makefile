# Quick start: `make demo` (simulate + process a dataset) and `make test` (the test suite).
# Both create ./.venv and install gpudiffuse with its dependencies on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/gpudiffuse: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/gpudiffuse

demo: install
	rm -rf demo_out
	$(BIN)/gpudiffuse demo demo_out

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache
