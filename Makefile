# Quick start: `make sync` (installs, then runs the daily sync), `make test`, `make ui`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install debian-packages sync test test-scenarios ui simulate report backfill-failed bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

sync: install
	$(BIN)/stock-assets sync

# The tests drive Debian's Chromium (the browser test) and start Debian's PostgreSQL (the lake's
# PostgreSQL catalog, the scale-out instance) and Redis (the limiter across hosts, Celery's broker):
# installed here when missing (as root, through apt-get), else a one-line
# message says how.
debian-packages:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's$$missing for the tests..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 $$missing >/dev/null; \
	  else \
	    echo "The tests need Debian's$$missing: run 'sudo apt-get install$$missing', then make test again." >&2; \
	    exit 1; \
	  fi; }

# Three workers on two cores: the tests wait on subprocesses, latency and the daemon part of the time
# (measured: 149% CPU of 200%; -n 4 took 19:43, no faster: the machine's CPU is the bound). Tests go
# to workers one by one (a whole test file on one worker left its slowest file the critical path),
# except the modules marked `xdist_group`, whose module fixture (a whole sync, or DuckDB 2.0.1
# installed) then runs once.
test: install debian-packages
	$(BIN)/python -m pytest -n 3 --dist loadgroup

# The long scenarios (a month of sessions, the browser journey, kills and their recovery): outside the
# default run.
test-scenarios: install debian-packages
	$(BIN)/python -m pytest -n 3 -m scenario

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
