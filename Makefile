# bcsync — everyday commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test screenshots test-fast test-faults lint bench soak clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create the virtualenv and install bcsync with its dev tools

demo: $(STAMP)  ## sandbox + api + worker with a scripted story (ARGS=--once to exit after it)
	$(BIN)/bcsync demo $(ARGS)

# The suite mostly waits on the processes and servers it starts (1-minute load below 1 on 2 cores when run
# one test at a time), so 4 pytest processes (pytest-xdist) take about half the time. Whole files go to one
# process (loadfile): some modules share a live stack and check it in their last test. The schemathesis module
# runs on its own afterwards: all its generated cases share one test id, which xdist cannot tell apart (it
# would run one case per test function). TEST_PROCESSES=0 runs the first part in one process too.
TEST_PROCESSES ?= 4
OWN_PROCESS_TESTS := tests/security/test_schemathesis.py

test: $(STAMP)  ## the whole suite (starts PostgreSQL and RabbitMQ if they are down, installs Chromium if root)
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh
	$(BIN)/pytest -q -n $(TEST_PROCESSES) --dist loadfile --ignore=$(OWN_PROCESS_TESTS)
	$(BIN)/pytest -q $(OWN_PROCESS_TESTS)

# The browser tests (tests/browser) with their screenshots written to docs/console/ (elsewhere they go to pytest's
# temporary directory, so that an ordinary run leaves the tree clean).
screenshots: $(STAMP)  ## browser tests; full-page screenshots of the console to docs/console/
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh
	BCSYNC_SCREENSHOTS=1 BCSYNC_REQUIRE_BROWSER=1 $(BIN)/pytest -q tests/browser

test-fast: $(STAMP)  ## unit tests only: no services needed
	$(BIN)/pytest -q tests/unit

test-faults: $(STAMP)  ## fault-injection suite (minutes; rewrites docs/reliability.md)
	bash scripts/ensure-services.sh
	$(BIN)/pytest -q tests/faults

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy service consumers schemas sandbox

bench: $(STAMP)  ## benchmarks; results go to docs/benchmarks.md
	bash scripts/ensure-services.sh
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.sandbox
	$(BIN)/python -m bench.documents
	$(BIN)/python -m bench.sync
	$(BIN)/python -m bench.console
	$(BIN)/python -m bench.requests

soak: $(STAMP)  ## 30-minute soak at 50 changes/s, not in CI (ARGS=--minutes 3); docs/soak.* and docs/benchmarks.md
	bash scripts/ensure-services.sh
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info bcsync.db*
