# AskFrank migration targets (the seed guide's commands), all calling the `migrator` CLI.
# Configure with DATABASE_URL (default: the embedded PostgreSQL in ./.migrator) and MIGRATIONS_PATH.
# The venv's own script: `uv run` adds ~0.1-0.2 s to every call (it re-checks the environment each
# time). The venv is synced (locked, byte-compiled) whenever pyproject.toml or uv.lock is newer.
VENV := .venv
SYNCED := $(VENV)/.migrator-synced
# our own modules byte-compiled too, again whenever one changes (with PYTHONDONTWRITEBYTECODE=1
# Python would otherwise recompile a changed module in memory on every call, ~0.1 s each)
COMPILED := $(VENV)/.migrator-compiled
MIGRATOR ?= $(VENV)/bin/migrator
ARGS ?=
# the CLI then suggests make's own forms (YES=1, ARGS="--expect 3") instead of its flags
migrate-%: export MIGRATOR_VIA_MAKE = 1

.PHONY: help migrate-up migrate-down migrate-down-all migrate-reset migrate-status migrate-create \
	migrate-list migrate-validate migrate-goto migrate-force migrate-tool-up migrate-tool-down \
	migrate-tool-status migrate-tool-create migrate-history migrate-drift setup test lint bench \
	prefect-up prefect-down

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

migrate-up: $(COMPILED) ## apply all pending migrations (N=k for the next k)
	@$(MIGRATOR) up $(N) $(ARGS)

migrate-down: $(COMPILED) ## revert the last migration (N=k for the last k)
	@$(MIGRATOR) down $(N) $(ARGS)

migrate-down-all: $(COMPILED) ## revert ALL migrations (destructive; asks, or YES=1)
	@$(MIGRATOR) down-all $(if $(YES),--yes) $(ARGS)

migrate-reset: $(COMPILED) ## down-all then up (development; asks, or YES=1)
	@$(MIGRATOR) reset $(if $(YES),--yes) $(ARGS)

migrate-status: $(COMPILED) ## version, dirty flag, applied and pending
	@$(MIGRATOR) status $(ARGS)

migrate-create: $(COMPILED) ## create a migration pair: make migrate-create NAME=add_patient_table
	@name="$(NAME)"; why=""; \
	if [ -z "$$name" ] && [ -t 0 ]; then printf 'Migration name (snake_case, e.g. add_patient_table): '; read name; \
	  case "$(ARGS)" in *--justification*) ;; *) printf 'Business justification (ticket and reason; empty leaves TODO, which validate refuses): '; read why;; esac; fi; \
	if [ -z "$$name" ]; then echo "error: give the migration a name: make migrate-create NAME=add_patient_table" >&2; exit 2; fi; \
	if [ -n "$$why" ]; then $(MIGRATOR) create "$$name" --justification "$$why" $(ARGS); else $(MIGRATOR) create "$$name" $(ARGS); fi

migrate-list: $(COMPILED) ## every migration, applied or pending
	@$(MIGRATOR) list $(ARGS)

migrate-validate: $(COMPILED) ## check migration files (pairs, names, SQL, safety lint)
	@$(MIGRATOR) validate $(ARGS)

migrate-goto: $(COMPILED) ## migrate up or down to a version: make migrate-goto V=3
	@if [ -z "$(V)" ]; then echo "error: give the target version: make migrate-goto V=3" >&2; exit 2; fi
	@$(MIGRATOR) goto $(V) $(ARGS)

migrate-force: $(COMPILED) ## set the version and clear dirty (careful): make migrate-force V=3
	@v="$(V)"; \
	if [ -z "$$v" ] && [ -t 0 ]; then printf 'Version to force (last fully applied; -1 for none): '; read v; fi; \
	if [ -z "$$v" ]; then echo "error: give the version: make migrate-force V=3" >&2; exit 2; fi; \
	$(MIGRATOR) force $(ARGS) -- "$$v"

migrate-history: $(COMPILED) ## audit trail of applied, reverted and forced migrations
	@$(MIGRATOR) history $(ARGS)

migrate-drift: $(COMPILED) ## live schema vs what the applied migrations produce (exit 3 on drift)
	@$(MIGRATOR) drift $(ARGS)

# The seed's "built-in migration tool" targets: the same CLI.
migrate-tool-up: migrate-up ## same as migrate-up
migrate-tool-down: migrate-down ## same as migrate-down
migrate-tool-status: migrate-status ## same as migrate-status
migrate-tool-create: migrate-create ## same as migrate-create

setup: ## install the locked environment, byte-compiled once (fast start even with PYTHONDONTWRITEBYTECODE)
	@rm -f $(SYNCED) $(COMPILED)
	@$(MAKE) -s $(COMPILED)
	@$(VENV)/bin/python -m compileall -q tasks flows

$(SYNCED): pyproject.toml uv.lock
	@uv sync --frozen --compile-bytecode --quiet
	@touch $@

$(COMPILED): $(SYNCED) $(wildcard migrator/*.py migrator/*/*.py)
	@$(VENV)/bin/python -m compileall -q migrator
	@touch $@

test: ## run the test suite
	uv run pytest

lint: ## ruff and mypy
	uv run ruff check . && uv run mypy migrator tasks flows

bench: ## engine benchmark against dbmate
	uv run python bench/bench_engine.py

prefect-up: ## local Prefect without docker: server on PostgreSQL, work pool, deploy --all, one worker
	scripts/prefect-local.sh up

prefect-down: ## stop the local Prefect server and worker (DROP_DB=1 also drops its database)
	scripts/prefect-local.sh down
