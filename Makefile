# buffercast: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := data/sample

# Project-local state, no analytics or telemetry calls (the machine may have no network).
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: help install browser sample-data run evaluate serve test lint format ui bench clean

## Show this help
help:
	@awk 'BEGIN {FS = ":"} /^## / {doc = substr($$0, 4); next} /^[a-zA-Z_-]+:/ && doc {printf "  \033[36m%-12s\033[0m %s\n", $$1, doc; doc = ""} {if ($$0 !~ /^## /) doc = doc}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	@touch $@

## Build the pinned environment in .venv/ from uv.lock (installs uv with pip if missing)
install: $(VENV)/.installed

$(SAMPLE)/sales.parquet: | $(VENV)/.installed
	$(BIN)/buffercast sample-data --out $(SAMPLE) --skus 500 --seed 7

## Generate the embedded default data (500 SKUs, 2 years, daily) into data/sample/ if absent
sample-data: $(SAMPLE)/sales.parquet

## Set up, generate the default data if absent and run the whole pipeline; prints a summary
run: install sample-data
	$(BIN)/buffercast run

## Evaluate the plan out of sample on the default data: plan at rolling origins, judge on what came after, with baselines
evaluate: install sample-data
	$(BIN)/buffercast evaluate

## Serve the weekly deployment (schedule in configs/default.yaml) until Ctrl-C: on PREFECT_API_URL if set, else on its own Prefect server at http://127.0.0.1:4200
serve: install sample-data
	$(BIN)/buffercast serve

## Install Debian's chromium for the report's browser test if it is missing (as root with apt-get; else the test is skipped, saying why)
browser:
	@if [ -x "$${BUFFERCAST_CHROMIUM:-/usr/bin/chromium}" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium (headless browser for tests/test_flow.py's report test)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
			|| echo "chromium could not be installed: the report's browser test will be skipped"; \
	else echo "chromium is not installed and only root can apt-get it: the report's browser test will be skipped"; fi

## Set up and run the linter and the tests
test: install lint browser
	$(BIN)/python -m pytest

## Lint with ruff
lint: install
	$(BIN)/ruff check .

## Format the code with ruff
format: install
	$(BIN)/ruff format .

## Open the MLflow UI on http://127.0.0.1:5000 for the runs in mlflow.db
ui: install
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

## Run the benchmarks in bench/ (slow scale checks, never part of make test: ~2 h on 2 cores); results in bench/results/
bench: install
	$(BIN)/python bench/profile_m5.py
	$(BIN)/python bench/m3_service_levels.py
	$(BIN)/python bench/m3_service_levels.py --no-calibrate --out bench/results/m3_service_levels_uncalibrated.json
	$(BIN)/python bench/forecast_speed.py
	$(BIN)/python bench/bootstrap_speed.py
	$(BIN)/python bench/ten_runs.py
	$(BIN)/python bench/evaluate_m3.py
	$(BIN)/python bench/evaluate_intermittent.py
	bash bench/fetch_data.sh
	$(BIN)/python bench/evaluate_walmart.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/postgres_read.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/fixed_cost.py
	$(BIN)/python bench/stage_memory.py

## Remove outputs, generated data, tracking store and caches (keeps .venv)
clean:
	rm -rf outputs $(SAMPLE) mlflow.db mlruns .prefect .pytest_cache .ruff_cache
