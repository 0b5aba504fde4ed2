# Two commands on a fresh machine (README, "Quick start"):
#   make run    set up .venv and run the headline on the embedded LFW sample
#   make test   set up .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facebench-installed
# the CPU build of torch (install it first, or pip pulls a multi-GB CUDA build); override
# with e.g. `make TORCH=torch test` on a GPU machine
TORCH ?= torch==2.13.0

.PHONY: setup run test test-fast

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps torchattacks
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/facebench run --defense side --attack pgd

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"
