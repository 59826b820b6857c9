# The two commands of the README: `make demo` and `make test`. Each sets up a virtual environment
# in .venv on first use (torch first, then graphseg with its test extra and compiled extension).
# Another torch: make test TORCH="torch==2.5.1"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.graphseg-installed
BUILD_INPUTS := pyproject.toml setup.py $(wildcard graphseg_ext/csrc/* graphseg_ext/csrc/*/*)

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): $(BUILD_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet "setuptools>=68" wheel
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/graphseg demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check graphseg graphseg_ext tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info graphseg_ext/*.so demo-out
