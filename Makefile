# fedquorum: every target installs what it needs first (into .venv), so a fresh clone works.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the encrypted federated demo (breast cancer, 5 simulated hospitals) logged to ./mlflow.db
demo: $(STAMP)
	$(BIN)/python -m experiments.run $(ARGS)

## Lint and run the whole test suite (two workers, a test file each: the end-to-end tests spend
## most of their time waiting on Flower's processes; the 25 slowest tests are listed at the end)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Crypto and round benchmarks, then the head-to-head benchmark against Flower FedAvg and SecAgg+
## (tables on stdout; CSV, JSON and PNG in outputs/, runs in ./mlflow.db; BENCH_ARGS=bench=quick: < 3 min)
bench: $(STAMP)
	$(BIN)/python -m experiments.bench_he
	$(BIN)/python -m experiments.bench_rounds
	$(BIN)/python -m experiments.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) outputs multirun mlruns mlflow.db .pytest_cache
