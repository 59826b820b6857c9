# The two commands of the README: `make demo` and `make test` (and `make docs`). Each sets up a
# virtual environment in .venv on first use (torch first, then graphseg with its test and docs
# extras and compiled extension), installing exactly the versions pinned in constraints.txt.
# Another torch: make test TORCH="torch==2.5.1" (the other pins stay).
# Refresh the pins from today's releases: make lock (then run make test and commit the file).

PYTHON ?= python3
VENV ?= .venv
LOCK := constraints.txt
TORCH ?= $(shell grep -m1 '^torch==' $(LOCK))
BIN := $(VENV)/bin
STAMP := $(VENV)/.graphseg-installed
BUILD_INPUTS := pyproject.toml setup.py $(LOCK) $(wildcard graphseg_ext/csrc/* graphseg_ext/csrc/*/*)
LOCK_VENV := .lock-venv

.PHONY: install demo test docs lint lock clean

install: $(STAMP)

# torch is installed on its own first (a plain `torch` requirement would pull a CUDA build);
# the other packages then come from the pins without torch, so TORCH= can name another one.
$(STAMP): $(BUILD_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	grep -v '^torch==' $(LOCK) > $(VENV)/constraints-without-torch.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints-without-torch.txt setuptools wheel
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints-without-torch.txt \
		--no-build-isolation -e ".[test,docs]"
	touch $@

demo: $(STAMP)
	$(BIN)/graphseg demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The documentation: the guide, the API from the docstrings and the notebooks executed with
# their figures; any warning fails the build.
docs: $(STAMP)
	$(BIN)/sphinx-build -q -E -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check graphseg graphseg_ext tests benchmarks

# Resolves pyproject.toml anew in a scratch environment (no extension build: it does not change
# the set) and writes every installed version to constraints.txt.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH)" setuptools wheel
	GRAPHSEG_BUILD_EXT=0 $(LOCK_VENV)/bin/python -m pip install --quiet --no-build-isolation \
		-e ".[test,docs]"
	{ echo "# Every package that \`make\` installs, pinned: the set the test suite runs against."; \
	  echo "# Regenerate with \`make lock\` (a fresh virtual environment resolved from pyproject.toml)."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable \
	    | grep -v -E '^(pip|graphseg)==' | sed -E 's/^(torch==[^+]*)\+.*/\1/'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info graphseg_ext/*.so demo-out docs/_build \
		docs/_generated
