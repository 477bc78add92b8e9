# make run: set up and start the service on ./data.  make test: set up and run every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test run test test-faults bench bench-deps system-deps clean grafana

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# setuptools' notice about editable installs warns that a folder named like the package would shadow
# it; none can here (the package `tswarm` is the folder service/), so that one notice is silenced.
EDITABLE := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e

# What running needs (make run); the test extras come with make test.
$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(EDITABLE) .
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(EDITABLE) '.[test]'
	touch $(RUN_STAMP) $(TEST_STAMP)

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

run: install
	$(BIN)/tswarm serve

# Debian packages the integration tests start for real (InfluxDB 1.x, VictoriaMetrics, Chromium).
system-deps:
	bash scripts/system-deps.sh

# On parallel workers (pytest-xdist): the suite mostly waits on the servers it starts. TEST_WORKERS=0: one process.
# It starts a few thousand Python processes (tswarm serve, the CLI): with PYTHONDONTWRITEBYTECODE set (as
# on some machines) each compiled tswarm's modules again, about a quarter of a CLI call's start. The
# bytecode is written, in the venv (PYTHONPYCACHEPREFIX: no __pycache__ folders in the checkout).
TEST_WORKERS ?= 2
TEST_ENV := PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache
test: install-test system-deps
	$(TEST_ENV) $(BIN)/pytest -n $(TEST_WORKERS)

# The fault suite alone (crash under load, disk full, PostgreSQL away, hostile clients, fuzz, secrets); `make test` runs it too.
test-faults: install-test system-deps
	$(TEST_ENV) $(BIN)/pytest -s tests/faults

# Debian packages the benchmarks drive (wrk) or measure against (nginx, never started as the system service).
bench-deps:
	bash scripts/bench-deps.sh

# Benchmarks, each side by side with its baseline (not pass/fail): see benchmarks/README.md.
bench: install-test system-deps bench-deps
	cd benchmarks && ../$(BIN)/python ingest.py && ../$(BIN)/python workers.py && ../$(BIN)/python steps.py && ../$(BIN)/python cold_start.py \
		&& ../$(BIN)/python gil.py && ../$(BIN)/python hotpath.py && ../$(BIN)/python export.py && ../$(BIN)/python forward.py && ../$(BIN)/python pg_ingest.py && ../$(BIN)/python pg_export.py

# Regenerate the Grafana dashboards in grafana/dashboards/ from service/grafana_dashboards.py.
grafana: install
	$(BIN)/python -m tswarm.grafana_dashboards grafana

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
