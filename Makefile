# Two commands do all set-up on a fresh machine:
#   make run   -- create .venv if missing, install, run the main job
#   make test  -- create .venv if missing, install, lint and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Flower's SuperLink would otherwise `uv sync` the app's dependencies into a fresh environment per
# run (pulling CUDA torch); we run the app in this project's own environment instead.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_TELEMETRY_ENABLED := 0
# SuperExec polls for new tasks every 0.1 s instead of 1 s (Flower's default): about a second less per round.
export FLWR_SUPEREXEC_TASK_POLL_INTERVAL := 0.1
export PYTHONUNBUFFERED := 1

.PHONY: run test lint install clean docker-test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(STAMP)

run: $(STAMP)
	VENV=$(VENV) scripts/simulate.sh configs/federated_demo.yaml 3

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Builds the server and site images and runs the containerised deployment end to end (needs Docker; starts
# dockerd when run as root). Not part of `make test`; .ci/run runs it after the test suite.
# DOCKER_TEST_ARGS: e.g. "--json docs/results/docker_e2e.json" (the figures of docs/deployment.md).
docker-test: $(STAMP)
	VENV=$(VENV) scripts/docker_test.sh $(DOCKER_TEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
