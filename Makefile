# `make test` is the README's test command; .ci/run calls it inside a fresh virtual environment.
PYTHON ?= python3

.PHONY: install install-dev system-deps serve test test-fast

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e .

install-dev:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

serve: install
	velollm serve

system-deps:
	bash .ci/system-deps

test: install-dev system-deps
	$(PYTHON) -m pytest -q -ra --durations=15

test-fast:
	$(PYTHON) -m pytest -q -x -m "not slow"
