# Developer entry points; every target just calls a script or cargo.
#   make up | down | test | migrate | fmt | lint | validate-deploy | bench | fuzz | ci
# Extra arguments: make test ARGS="-E test(foo)"; make bench reads BENCH_SECS from the environment
SHELL := bash
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help up down test migrate fmt lint validate-deploy bench fuzz ci

help:
	@echo "targets: up down test migrate fmt lint validate-deploy bench fuzz ci"

up:
	./scripts/up.sh

down:
	./scripts/down.sh

test:
	./scripts/test.sh $(ARGS)

migrate:
	./scripts/migrate.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

validate-deploy:
	bash ./scripts/validate-deploy.sh

bench:
	bash -c 'source scripts/lib.sh && ensure_deps && cargo bench -p inventory-sync --bench adjustments'

fuzz:
	./scripts/fuzz-api.sh

ci:
	bash .ci/run
