# Two commands a newcomer needs: `make train` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test test-fast env clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

train: env
	$(PY) train.py $(ARGS)

test: env
	$(PY) -m pytest $(ARGS)

test-fast: env
	$(PY) -m pytest -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
