# Postroom — every target a person or CI runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := .data
KAFKA_DATA := $(DATA)/kafka
export POSTROOM_CACHE_DIR ?= $(HOME)/.cache/postroom

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install Postroom with its dev tools

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

kafka-start: install ## Start the local Kafka broker (skipped when POSTROOM_KAFKA_BOOTSTRAP is set)
	@if [ -n "$$POSTROOM_KAFKA_BOOTSTRAP" ]; then echo "using Kafka at $$POSTROOM_KAFKA_BOOTSTRAP"; \
	else $(PY) -m app.localkafka start --data-dir $(KAFKA_DATA); fi

kafka-stop: ## Stop the local Kafka broker started by kafka-start
	@if [ -x $(PY) ]; then $(PY) -m app.localkafka stop --data-dir $(KAFKA_DATA); fi

run: install ## Run the service: local Kafka, topics, demo catalogue, worker on 127.0.0.1:6066
	@$(PY) -m app.run

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/mypy

unit: install ## Unit tests (no broker)
	$(VENV)/bin/pytest -q tests/unit

test: install ## Lint, type-check, unit tests and integration tests against a real broker
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest tests

bench: $(VENV)/.bench-installed ## Benchmarks side by side (see bench/README.md); results in bench/results/
	$(PY) -m bench $(BENCH_ARGS)

compose-check: ## Validate docker-compose.yml (needs docker-compose)
	docker-compose -f docker-compose.yml config --quiet

clean: kafka-stop ## Stop the broker and delete local data (keeps the jar cache)
	rm -rf $(DATA)

.PHONY: help install kafka-start kafka-stop run lint unit test bench compose-check clean
