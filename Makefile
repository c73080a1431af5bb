# AskFrank migration targets (the seed guide's commands), all calling the `migrator` CLI.
# Configure with DATABASE_URL (default: the embedded PostgreSQL in ./.migrator) and MIGRATIONS_PATH.
MIGRATOR ?= uv run --quiet migrator
ARGS ?=

.PHONY: help migrate-up migrate-down migrate-down-all migrate-reset migrate-status migrate-create \
	migrate-list migrate-validate migrate-goto migrate-force migrate-tool-up migrate-tool-down \
	migrate-tool-status migrate-tool-create migrate-history setup test lint bench \
	prefect-up prefect-down

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

migrate-up: ## apply all pending migrations (N=k for the next k)
	$(MIGRATOR) up $(N) $(ARGS)

migrate-down: ## revert the last migration (N=k for the last k)
	$(MIGRATOR) down $(N) $(ARGS)

migrate-down-all: ## revert ALL migrations (destructive; asks, or YES=1)
	$(MIGRATOR) down-all $(if $(YES),--yes) $(ARGS)

migrate-reset: ## down-all then up (development; asks, or YES=1)
	$(MIGRATOR) reset $(if $(YES),--yes) $(ARGS)

migrate-status: ## version, dirty flag, applied and pending
	$(MIGRATOR) status $(ARGS)

migrate-create: ## create a migration pair: make migrate-create NAME=add_patient_table
	@name="$(NAME)"; \
	if [ -z "$$name" ] && [ -t 0 ]; then printf 'Migration name (snake_case, e.g. add_patient_table): '; read name; fi; \
	if [ -z "$$name" ]; then echo "error: give the migration a name: make migrate-create NAME=add_patient_table" >&2; exit 2; fi; \
	$(MIGRATOR) create "$$name" $(ARGS)

migrate-list: ## every migration, applied or pending
	$(MIGRATOR) list $(ARGS)

migrate-validate: ## check migration files (pairs, names, SQL, safety lint)
	$(MIGRATOR) validate $(ARGS)

migrate-goto: ## migrate up or down to a version: make migrate-goto V=3
	@if [ -z "$(V)" ]; then echo "error: give the target version: make migrate-goto V=3" >&2; exit 2; fi
	$(MIGRATOR) goto $(V) $(ARGS)

migrate-force: ## set the version and clear dirty (careful): make migrate-force V=3
	@v="$(V)"; \
	if [ -z "$$v" ] && [ -t 0 ]; then printf 'Version to force (last fully applied; -1 for none): '; read v; fi; \
	if [ -z "$$v" ]; then echo "error: give the version: make migrate-force V=3" >&2; exit 2; fi; \
	$(MIGRATOR) force -- "$$v" $(ARGS)

migrate-history: ## audit trail of applied, reverted and forced migrations
	$(MIGRATOR) history $(ARGS)

# The seed's "built-in migration tool" targets: the same CLI.
migrate-tool-up: migrate-up ## same as migrate-up
migrate-tool-down: migrate-down ## same as migrate-down
migrate-tool-status: migrate-status ## same as migrate-status
migrate-tool-create: migrate-create ## same as migrate-create

setup: ## install the project and its tools (uv)
	uv sync

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
