# protomesh entry points. `make help` lists them; every target installs what it needs.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

VENV := .venv
PY := $(VENV)/bin/python
BUF := .tools/node/node_modules/.bin/buf
DESCRIPTOR := gen/descriptors/protomesh.binpb
PROTOS := $(shell find protos/acme -name '*.proto' 2>/dev/null | sort)
# Every service of the project: a folder under services/ with an app/ package (protomesh new service adds one).
SERVICES := $(patsubst services/%/app,%,$(wildcard services/*/app))
COMPOSE_TEST := tests/containers/test_stack.py::test_the_stack_in_containers_answers_the_walkthrough_and_survives_a_kill_9

.PHONY: help setup protos openapi clients lint test images compose-test up down status bench chaos clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install every tool into the project (.venv, .tools): idempotent, prints each step
	@scripts/bootstrap.sh

protos: ## Generate Python stubs (gen/python) and the gateway descriptor set (gen/descriptors)
	@scripts/bootstrap.sh venv >/dev/null
	@$(VENV)/bin/protomesh protos --root protos --python-out gen/python --descriptor-out $(DESCRIPTOR)

openapi: setup protos ## Generate the REST API's OpenAPI document (gen/openapi), served at /openapi.json and /docs
	@scripts/bootstrap.sh openapi swaggerui >/dev/null
	@scripts/openapi.sh

clients: setup protos ## Generate and build the Go, TypeScript and Java clients (gen/go, clients/ts/dist, clients/java/target)
	@scripts/clients.sh

lint: setup protos ## buf format/lint/breaking, ruff, mypy
	@echo "==> buf format"; cd protos && ../$(BUF) format --diff --exit-code --path acme --path protomesh
	@echo "==> buf lint"; cd protos && ../$(BUF) lint
	@echo "==> buf breaking (against the previous commit)"; scripts/buf-breaking.sh
	@echo "==> ruff"; $(VENV)/bin/ruff check .
	@echo "==> mypy"; $(VENV)/bin/mypy
	@# Each service's package is named `app`, so each is checked from its own folder.
	@for svc in $(SERVICES); do echo "==> mypy services/$$svc"; (cd services/$$svc && ../../$(PY) -m mypy app tests); done

test: setup protos openapi lint clients ## Run every test against real Consul, Envoy and RabbitMQ
	@scripts/bootstrap.sh bench grpcgateway interop grpcurl chromium browser fuzz
	@scripts/test.sh

images: setup ## Build every image docker-compose.yml names with podman (stand-in base images where no registry)
	@$(PY) -m tests.containers.images

compose-test: setup protos ## Run docker-compose.yml in podman: walkthrough and kill -9 through the containerised Envoy
	@$(PY) -m pytest $(COMPOSE_TEST) -q -o log_cli=true --log-cli-level=INFO --log-cli-format='%(asctime)s %(message)s'

up: setup protos openapi ## Run the whole mesh in the foreground (Ctrl-C stops it)
	@scripts/bootstrap.sh grpcurl
	@$(VENV)/bin/protomesh up

down: ## Stop a mesh started with `protomesh up --detach`
	@$(VENV)/bin/protomesh down

status: ## Show instances, health and gateway routes of the running mesh
	@$(VENV)/bin/protomesh status

bench: setup protos ## Measure the benchmark figures: bench/results/latest.json + docs/BENCHMARKS.md (ONLY=p1,p7)
	@scripts/bootstrap.sh bench grpcgateway
	@$(PY) -m bench $(if $(ONLY),--only $(ONLY))

chaos: setup protos ## Fault suite under load (~4 min): bench/results/chaos.json, docs/RELIABILITY.md (ARGS="--only kill9")
	@$(PY) -m bench.chaos $(ARGS)

clean: ## Remove generated code and local state (keeps installed tools)
	rm -rf gen var clients/ts/gen clients/ts/dist clients/java/target
