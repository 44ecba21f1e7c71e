# mcached: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= $(shell bash scripts/python.sh)
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 11211
ARGS   ?=

# `make install` installs system-wide (root): see scripts/install.sh.
.PHONY: all venv install dev run test test-unit test-int test-free-threaded cov lint fmt type bench bench-memory clean system-deps

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installs the package (editable) with its runtime dependencies.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

# Adds what the tests need on top.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	touch $@

venv dev: $(VENV)/.installed

install:
	bash scripts/install.sh

# Starts a daemon in the foreground on 127.0.0.1:11211 with memcached's defaults.
run: $(VENV)/.installed
	$(BIN)/mcached -l $(HOST) -p $(PORT) $(ARGS)

# The reference memcached and libmemcached's tools, for the comparison tests and benchmarks.
system-deps:
	@PYTHON=$(PYTHON) bash scripts/install-system-deps.sh

# The suite runs in TEST_JOBS processes (pytest-xdist; TEST_JOBS=0: one process). Most tests
# wait on sockets, timers and subprocesses rather than compute, so more processes than cores
# still shortens the run.
TEST_JOBS ?= 4
test: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_JOBS)

test-unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) -m unit

test-int: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) -m integration

# The suite on a free-threaded CPython, where the workers are threads of one process that run
# Python at the same time (by hand, not in CI): scripts/free-threaded-python.sh builds
# python3.13t from Debian's source first (~5 minutes, once). Left out: the tests of worker
# processes (there the command runs threads), and the test clients with no free-threaded build
# that installs here (cryptography for the TLS certificates, emcache, meta-memcache: they need
# Rust or an older CPython), with the tests that use them, and `make run`'s (that environment
# is not made by the targets above). PYTHON_GIL=0 keeps the GIL off in
# the test processes once they import pylibmc (its extension does not declare itself safe
# without the GIL, so importing it would turn the GIL on for the in-process daemons that run
# after it; the tests use each pylibmc client from one thread).
FT_VENV ?= .venv-ft
FT_SKIP  = --ignore=tests/integration/test_processes.py \
	--ignore=tests/integration/test_discovery_processes.py \
	--ignore=tests/integration/test_tls.py --ignore=tests/integration/test_meta_memcache.py \
	-k "not test_emcache and not test_every_client_discovers and not test_tls_and_client \
	and not test_a_notls_listener_first and not (reference_cycles and tls) and not make_run"
test-free-threaded:
	@set -e; py="$$(bash scripts/free-threaded-python.sh)"; \
	PYTHON="$$py" bash scripts/install-system-deps.sh; \
	[ -x $(FT_VENV)/bin/python ] || "$$py" -m venv $(FT_VENV); \
	$(FT_VENV)/bin/python -m pip install -q -e . pytest pytest-xdist pymemcache \
		--only-binary hypothesis hypothesis django-elastipymemcache Django \
		elasticache-auto-discovery python-binary-memcached pylibmc python-memcached; \
	PATH="$(CURDIR)/$(FT_VENV)/bin:$$PATH" PYTHON_GIL=0 \
		$(FT_VENV)/bin/python -m pytest -q -n $(TEST_JOBS) $(FT_SKIP)

# Line and branch coverage of the whole suite, one row per module (COV_ARGS: pytest's, e.g.
# COV_ARGS="-m unit" or COV_ARGS=tests/protocol); the daemons it starts as subprocesses
# (lifecycle tests, scripts/cluster.py) are not counted.
COV_ARGS ?=
cov: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest -q --cov --cov-report=term-missing $(COV_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check mcached tests scripts
	$(BIN)/ruff format --check mcached tests scripts

fmt: $(VENV)/.installed-test
	$(BIN)/ruff format mcached tests scripts
	$(BIN)/ruff check --fix mcached tests scripts

type: $(VENV)/.installed-test
	$(BIN)/mypy

# Medians of 3 runs per load and server, alternating (the machine is noisy).
BENCH_ARGS ?= --repeat 3 --ceiling
bench: system-deps $(VENV)/.installed
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

bench-memory: system-deps $(VENV)/.installed
	$(BIN)/python scripts/bench_memory.py

clean:
	rm -rf $(VENV) $(FT_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
