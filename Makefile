# Everyday commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
COMPOSE ?= docker compose
LOAD_DURATION ?= 5m
SOAK_SECONDS ?= 600
# Where `make backup` writes its dumps (the compose service's bind mount) and where
# `make restore` looks for FILE.
BACKUP_DIR ?= backups
UV_RUN := uv run --frozen
# scripts/install-deps links the pinned uv there.
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: k8s-render screenshots bench bench-db profile help up down native-up native-down native-fix-search native-unfix-search logs ps load load-ui migrate fix-search unfix-search backup restore native-backup native-restore deps venv test soak fresh-machine lint fmt

help: ## List the commands
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-13s %s\n", $$1, $$2}'

## --- The stack (Docker) ---
up: .env ## Build and start the whole stack; returns when every service is healthy
	$(COMPOSE) up -d --build --wait
	@echo "Gateway    http://127.0.0.1:8080  (Swagger: /api/docs and /processor/docs)"
	@echo "Grafana    http://127.0.0.1:3000  (admin / GRAFANA_ADMIN_PASSWORD from .env)"

down: ## Stop the stack (volumes are kept; add -v by hand to drop them)
	$(COMPOSE) --profile load down

logs: ## Follow every container's logs
	$(COMPOSE) logs -f --tail=100

ps: ## Show the containers and their health
	$(COMPOSE) ps

load: .env ## Run Locust headless through the gateway for LOAD_DURATION (default 5m)
	LOAD_RUN_TIME=$(LOAD_DURATION) $(COMPOSE) --profile load run --rm locust

load-ui: .env ## Locust's web UI on http://127.0.0.1:8089 instead (start/stop runs there)
	$(COMPOSE) --profile load run --rm -e LOCUST_HEADLESS=false -p 127.0.0.1:8089:8089 locust

migrate: .env ## Run the migrate/seed job again (idempotent)
	$(COMPOSE) run --rm migrate

fix-search: .env ## Apply the trigram index that fixes the slow search
	$(COMPOSE) run --rm migrate api-svc-db fix-search

unfix-search: .env ## Drop that index again, to measure before and after
	$(COMPOSE) run --rm migrate api-svc-db unfix-search

# The one-shot `backup` service (profile backup) running scripts/pg-backup; the dumps belong
# to whoever runs make, and BACKUP_DIR goes to compose as an absolute path.
BACKUP_RUN = BACKUP_DIR="$(abspath $(BACKUP_DIR))" BACKUP_UID="$$(id -u)" BACKUP_GID="$$(id -g)" \
	$(COMPOSE) --profile backup run --rm backup

backup: .env ## pg_dump the database into BACKUP_DIR (default backups/) while api-svc serves
	@mkdir -p "$(BACKUP_DIR)"
	$(BACKUP_RUN) backup

restore: .env ## Restore FILE=backups/<name>.dump: checked in a scratch database, then applied
	@[ -n "$(FILE)" ] || { echo "make restore: say which backup: make restore FILE=$(BACKUP_DIR)/messages-<time>.dump" >&2; exit 2; }
	@[ -f "$(FILE)" ] || { echo "make restore: no such file: $(FILE); the database was not changed." >&2; exit 1; }
	@[ "$(abspath $(dir $(FILE)))" = "$(abspath $(BACKUP_DIR))" ] || { echo "make restore: $(FILE) is not in $(BACKUP_DIR)/, the only directory the backup container sees; the database was not changed." >&2; exit 1; }
	$(BACKUP_RUN) stage "/backups/$(notdir $(FILE))"
	$(COMPOSE) run --rm migrate api-svc-db check --staged || { $(BACKUP_RUN) discard; echo "make restore: $(FILE) was not restored; the database was not changed." >&2; exit 1; }
	$(BACKUP_RUN) apply "/backups/$(notdir $(FILE))"

.env: ## (first run) .env from .env.example, with random passwords filled in
	@# umask 077: the file holds the passwords, so it is created readable by its owner only.
	@umask 077 && python3 -c 'import re, secrets, sys; \
	text = open(".env.example").read(); \
	sys.stdout.write(re.sub(r"^(\w*PASSWORD)=$$", lambda m: m[1] + "=" + secrets.token_hex(24), text, flags=re.M))' > .env
	@echo "Created .env with random passwords (Grafana: see GRAFANA_ADMIN_PASSWORD in .env)."

## --- The stack without Docker (native twin: same configs, OS packages, 127.0.0.1) ---
native-up: deps ## Start the native stack; returns when every component is healthy
	$(UV_RUN) stackctl up

native-down: ## Stop every process native-up started (state stays in .stack/)
	$(UV_RUN) stackctl down

native-fix-search: ## fix-search on the native stack (native-unfix-search reverts it)
	$(UV_RUN) stackctl fix-search

native-unfix-search:
	$(UV_RUN) stackctl unfix-search

native-backup: ## pg_dump the native stack's database into backups/native/ (native-restore FILE=...)
	$(UV_RUN) stackctl backup

native-restore:
	$(UV_RUN) stackctl restore $(if $(FILE),"$(FILE)")

bench: deps ## Measure what observability costs on the native twin (~8 min; writes bench/results.json and chart.svg)
	$(UV_RUN) python -m stackctl.bench

bench-db: deps ## CPU per read by id on each way into PostgreSQL (ORM, Core, psycopg; ~1 min)
	$(UV_RUN) python -m stackctl.bench.access_paths

profile: deps ## Where the services' CPU goes under the bench's load (py-spy, ~2.5 min; writes bench/profiles/)
	$(UV_RUN) python -m stackctl.profile

## --- Kubernetes (deploy/kubernetes, docs/kubernetes.md) ---
# K8S_OUT=- prints one target (K8S_TARGET, default kube-prometheus-stack) on stdout instead.
K8S_OUT ?= build/kubernetes
K8S_TARGET ?= kube-prometheus-stack
k8s-render: venv ## Render deploy/kubernetes (base, local, kube-prometheus-stack) into build/kubernetes/
	@$(UV_RUN) python -m stackctl.kubernetes $(if $(filter -,$(K8S_OUT)),--stdout $(K8S_TARGET),--out $(K8S_OUT))

## --- Development ---
deps: ## Install what the tests need (Debian packages, uv) and the locked Python environment
	scripts/install-deps
	uv sync --frozen

venv: ## The locked Python environment only
	uv sync --frozen

test: deps ## Run every test: unit, integration (real gunicorn, PostgreSQL) and config checks
	$(UV_RUN) pytest

screenshots: deps ## Swagger UI of both services in a real browser -> docs/*.png (~1 min)
	SWAGGER_SCREENSHOTS_DIR=$(CURDIR)/docs $(UV_RUN) pytest tests/e2e/test_swagger_ui.py -q -k screenshots

soak: deps ## The soak (SOAK_SECONDS, default 600) and the long tests make test leaves out (~25 min)
	SOAK_SECONDS=$(SOAK_SECONDS) $(UV_RUN) pytest tests/e2e -m "soak or long" -s

fresh-machine: ## make test on a fresh Debian chroot, as root (SUITE=bookworm|trixie; ~25 min)
	scripts/fresh-machine-test $(SUITE)

lint: venv ## ruff and mypy (strict), as CI and pre-commit run them
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .
	$(UV_RUN) mypy
	@# Each test tree on its own: they share module names such as conftest.
	@for d in service-kit/tests api-svc/tests processor-svc/tests tests; do \
		echo "mypy $$d"; $(UV_RUN) mypy $$d || exit 1; done

fmt: venv ## Format and autofix
	$(UV_RUN) ruff format .
	$(UV_RUN) ruff check --fix .
