# Set-up is part of every target: .venv is created and the package installed (editable, with
# the dev tools) when missing or when setup.cfg / setup.py / constraints.txt changed; otherwise
# nothing slow runs. PYTHON must be a CPython 3.11 (the pinned torch wheels are built for it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test
install: $(STAMP)

$(STAMP): setup.cfg setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
