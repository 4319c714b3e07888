# Quick start: `make sync` (installs, then runs the daily sync), `make test`, `make ui`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install sync test ui simulate report backfill-failed bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

sync: install
	$(BIN)/stock-assets sync

test: install
	$(BIN)/python -m pytest -n 2

ui: install
	$(BIN)/stock-assets ui

simulate: install
	$(BIN)/stock-assets simulate

report: install
	$(BIN)/stock-assets report

backfill-failed: install
	$(BIN)/stock-assets backfill-failed

bench: install
	$(BIN)/python bench/bench_client.py
	$(BIN)/python bench/bench_sync.py

clean:
	rm -rf $(VENV) data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
