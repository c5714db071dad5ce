# bcsync — everyday commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create the virtualenv and install bcsync with its dev tools

demo: $(STAMP)  ## sandbox + api + worker with a scripted story (ARGS=--once to exit after it)
	$(BIN)/bcsync demo $(ARGS)

test: $(STAMP)  ## the whole suite (starts PostgreSQL and RabbitMQ if they are down)
	bash scripts/ensure-services.sh
	$(BIN)/pytest -q

test-fast: $(STAMP)  ## unit tests only: no services needed
	$(BIN)/pytest -q tests/unit

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy service consumers schemas sandbox

bench: $(STAMP)  ## benchmarks; results go to docs/benchmarks.md
	bash scripts/ensure-services.sh
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.sandbox
	$(BIN)/python -m bench.documents
	$(BIN)/python -m bench.sync

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info bcsync.db*
