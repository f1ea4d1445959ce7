# The two commands of the README: `make demo` runs the main job, `make test` runs the tests.
# Both set up a fresh machine first (system packages, .venv, pip install) via infra/setup.sh.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-unit lint up down bench clean-state readme

setup:
	@bash infra/setup.sh

demo: setup
	$(BIN)/framebus demo

# The lint gate, then unit and integration tests together; pytest's exit code 5 (no tests
# collected) is a failure.
test: setup lint
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests - failing"; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check .

test-unit: setup
	$(BIN)/python -m pytest -m unit

up: setup
	$(BIN)/framebus up

down:
	$(BIN)/framebus down

bench: setup
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null || echo "bench: wrk not installed; HTTP is measured with httpx"
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.producer
	$(BIN)/python -m bench.scheduler
	$(BIN)/python -m bench.engine
	$(BIN)/python -m bench.metering
	$(BIN)/python -m bench.webhooks
	$(BIN)/python -m bench.batch
	$(BIN)/python -m bench.status

clean-state: setup
	$(BIN)/framebus down --purge

# Regenerate what is derived from code: JSON Schemas and the README's tables.
readme: setup
	$(BIN)/python -m framebus.schemas.export
	$(BIN)/python -m framebus.schemas.readme
	$(BIN)/python -m framebus.services.gateway.openapi
