# `make test` and `make demo` set up .venv themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all demo lint format bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: its CPU build is on this machine's disk; anything else pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	# torchvision 0.28.0 (torch 2.13.0's pair), a test reference only (tests/conftest.py): no deps,
	# and off sys.path, since beside the CPU torch its import needs the shim there (its C++ ops are
	# built for CUDA torch) and transformers would otherwise import it and fail. ~2 s, 24 MB.
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/test-torchvision torchvision==0.28.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	$(VENV)/bin/qcxr demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/qcxr bench quantum

clean:
	rm -rf $(VENV) build *.egg-info
