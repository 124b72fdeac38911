# `make test` is the README's test command; .ci/run calls it inside a fresh virtual environment.
PYTHON ?= python3

.PHONY: install install-dev serve test test-fast

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e .

install-dev:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

serve: install
	velollm serve

test: install-dev
	$(PYTHON) -m pytest -q -ra --durations=15

test-fast:
	$(PYTHON) -m pytest -q -x -m "not slow"
