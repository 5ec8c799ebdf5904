# bitconvert: set-up, tests, demo, benchmarks. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make test runs the suite in this many worker processes (pytest-xdist), each taking a whole test file at a time
# in the order pytest collects them (a file's fixtures are built once; the light top-level files come last);
# 2 fits the project's 2-core machine. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: help install test demo lint bench constraints clean

help:
	@echo "make install   create $(VENV) (Python 3.11) with pinned dependencies and bitconvert"
	@echo "make test      install, then run the whole test suite (and on an AVX-512 CPU its numerics tests again, capped at AVX2)"
	@echo "make demo      install, then fetch+export a synthetic r50x1-160 over loopback"
	@echo "make lint      ruff over convert/ scripts/ tests/"
	@echo "make bench     benchmarks, printed as a table (BENCH=inference: one of them; installs the bench extra)"
	@echo "make clean     remove $(VENV), caches and exports"

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@test -x $(BIN)/bitconvert
	@touch $@

# The numerics tests run a second time with the CPU kernels capped at AVX2: oneDNN (TensorFlow,
# torch) and XLA (JAX). An AVX2-only CPU (an AMD EPYC) runs other kernels, rounds differently,
# and lacks some of them (docs/keras.md). LiteRT and onnxruntime have no such cap: the suite runs them
# under an emulated AVX2 CPU instead (tests/export/test_emulated_cpu.py). Skipped when PYTEST_ARGS picks tests,
# and on a CPU without AVX-512: its first run used those AVX2 kernels already (about 3 minutes saved on an EPYC).
AVX2_CAP := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 XLA_FLAGS=--xla_cpu_max_isa=AVX2
AVX2_TESTS := tests/model tests/parity
HAS_AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo yes)
AVX2_RERUN := $(AVX2_CAP) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -q $(AVX2_TESTS)
AVX2_SKIPPED := @echo "make test: no AVX-512 on this CPU, so the tests ran its AVX2 kernels already; the AVX2-capped rerun is skipped"

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,$(if $(HAS_AVX512),$(AVX2_RERUN),$(AVX2_SKIPPED)))

lint: install
	$(BIN)/ruff check convert scripts tests
	$(BIN)/ruff format --check convert scripts tests

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python scripts/bench.py

constraints: install
	$(BIN)/pip freeze --exclude-editable | grep -vi '^bitconvert' > constraints.txt.new
	@echo "review and move constraints.txt.new over constraints.txt"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache exports demo-work bench-results *.egg-info
