# The few verbs people type. `make demo` and `make test` install what they need first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
# The venv first on PATH: kedro, dvc and mlflow (which runs `uv export` to record the
# model's requirements) find the project's tools.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Nothing leaves the machine unless you turn it on (docs: "Telemetry"): every tool's usage-data
# switch off, unless already set in your environment.
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true
export KEDRO_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export GX_ANALYTICS_ENABLED ?= false

.PHONY: install demo serve test lint format docs docs-serve bench viz mlflow-ui clean help \
	services services-stop airflow-test

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Optional extras to install, e.g. `make install EXTRAS=gpu` (TensorFlow's CUDA libraries).
EXTRAS ?=
STAMP := $(VENV)/.installed$(subst $() ,-,$(addprefix -,$(EXTRAS)))

install: $(STAMP)  ## Create .venv and install exactly the locked dependencies (EXTRAS=gpu: CUDA)

# An exact sync: packages that are not in the lock (or not in EXTRAS) are removed.
# --compile-bytecode writes every module's .pyc now: where PYTHONDONTWRITEBYTECODE is set
# (many CI and container images) Python would otherwise recompile MLflow, pandas and Kedro
# from source at every start (`kedro registry list`: 7 s instead of 2.7 s here).
$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	UV_PYTHON=$(BIN)/python $(BIN)/uv sync --frozen --compile-bytecode $(addprefix --extra ,$(EXTRAS))
	@rm -f $(VENV)/.installed*
	@touch $@

demo: install  ## Generate the synthetic demo data if absent, then run the whole DAG on it
	@if [ -z "$$(find data/01_raw/demo -type f 2>/dev/null | head -n 1)" ] || \
		[ -z "$$(find data/01_raw/demo_external -type f 2>/dev/null | head -n 1)" ]; then \
		$(BIN)/kedro run --env=demo --pipelines=demo_data; fi
	$(BIN)/kedro run --env=demo

# `make serve`: the registered champion (MODEL_URI=models:/breast-cancer-classifier/3 for
# another) on http://127.0.0.1:$(PORT)/: MLflow's /invocations and a page to try the model.
# HOST=0.0.0.0 listens beyond this machine. Kedro's per-request INFO lines are kept quiet.
# RUNTIME=onnxruntime runs the packaged model.onnx on ONNX Runtime (default: the model's
# logged inference.serving.runtime).
PORT ?= 5001
RUNTIME ?=
serve: install  ## The champion model: a page and /invocations on port PORT (default 5001)
	PORT=$(PORT) RUNTIME=$(RUNTIME) KEDRO_LOGGING_CONFIG=$${KEDRO_LOGGING_CONFIG:-conf/logging_serving.yml} \
		$(BIN)/python -m breast_cancer_pipeline.serving

# Three xdist workers on the two cores (the suite waits on servers, subprocesses and disks for
# a good part of its time: two workers kept 1.2 of 2 cores busy), each module's tests on one, the two modules of the shared
# whole-DAG flow together and first (tests/conftest.py): the flow overlaps with the rest.
# PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 3
test: install  ## Lint, the docs site (strict), then the test suite on 3 workers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MKDOCS) build --strict --quiet --site-dir $(DOCS_CHECK_DIR)
	$(BIN)/pytest -n $(PYTEST_WORKERS)

# The documentation site (mkdocs.yml, docs/). `--strict`: a broken link or anchor fails the
# build. `make test` builds it into site/.check (git-ignored; a hidden folder, which the
# cleaning of site/ by `make docs` leaves alone). Material's banner about MkDocs 2 is quiet.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
DOCS_CHECK_DIR := site/.check
docs: install  ## Build the documentation site into site/ (strict: broken links fail)
	$(MKDOCS) build --strict --site-dir site

docs-serve: install  ## Serve the documentation on http://127.0.0.1:8000, rebuilt on change
	$(MKDOCS) serve --strict --dev-addr 127.0.0.1:8000

lint: install  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `make bench AREAS="ingestion serving"` runs some areas; BENCH_QUICK=1 a tiny smoke run of
# each (figures meaningless, written to benchmarks/results/quick.json). Fails only if a
# measured thing fails; missed goals are reported.
BENCH_QUICK ?=
bench: install  ## Benchmarks → benchmarks/results/latest.json (AREAS="ingestion ..." for some)
	BENCH_QUICK=$(BENCH_QUICK) $(BIN)/python -m benchmarks.run $(AREAS)

viz: install  ## kedro-viz on http://127.0.0.1:4141
	$(BIN)/kedro viz run

mlflow-ui: install  ## The MLflow UI on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean:  ## Remove generated data, models, reports, the MLflow database and the Optuna study (keeps .venv)
	find data -mindepth 2 ! -name .gitkeep -delete 2>/dev/null || true
	find data -mindepth 2 -type d -empty -delete 2>/dev/null || true
	rm -f mlflow.db optuna.db

# `make services`: a team's tracking server on this machine (docs: "Several machines"):
# PostgreSQL on 127.0.0.1:$(PG_PORT) and `mlflow server` on it at http://127.0.0.1:$(MLFLOW_PORT),
# their data, logs and password file under .services/ (git-ignored). It prints the two
# variables that point the pipeline, `make serve` and Optuna at them.
PG_PORT ?= 5432
MLFLOW_PORT ?= 5000
services: install  ## PostgreSQL and an MLflow server on it, on 127.0.0.1 (PG_PORT, MLFLOW_PORT)
	$(BIN)/python -m deploy.services start --root .services --pg-port $(PG_PORT) \
		--mlflow-port $(MLFLOW_PORT)

services-stop: install  ## Stop them (their data stay in .services/)
	$(BIN)/python -m deploy.services stop --root .services

# `make airflow-test`: Airflow 3 and kedro-airflow in their own environment (deploy/airflow/, its
# own lock: Airflow caps fastapi below the project's pin), then `airflow dags test` of the DAG that
# `kedro airflow create` generates, on the tiny demo configuration, and the docs' Airflow commands
# through Airflow's own parsers. Minutes; .ci/run runs it.
airflow-test: install  ## Airflow's environment, then `airflow dags test` of the generated DAG
	UV_PYTHON=$(BIN)/python $(BIN)/uv sync --locked --compile-bytecode --project deploy/airflow
	AIRFLOW_DAG_TEST=1 $(BIN)/pytest -n 0 -q -s tests/deploy/test_airflow.py -k generated_dag
	$(BIN)/pytest -n 0 -q tests/test_docs_commands.py -k airflow
