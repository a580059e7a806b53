#!/usr/bin/env bash
# Run the whole test suite against local PostgreSQL and NATS (JetStream), then the
# static deployment checks.
#
#   ./scripts/test.sh [extra args for nextest / cargo test]
#
# Makes sure PostgreSQL (127.0.0.1:5432, role able to CREATE DATABASE) and NATS with
# JetStream (127.0.0.1:4222) are running (docker compose when a docker engine is
# available, otherwise local Debian packages), then runs `cargo nextest run --workspace`
# (or `cargo test --workspace` without cargo-nextest) and scripts/validate-deploy.sh.
# Tests create a fresh database each, so re-running is harmless.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DATASYNC_ROOT"

ensure_deps
ensure_test_tools

have cargo || die "cargo not found: install Rust (https://rustup.rs), then re-run"

status=0
if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run --workspace $*"
    cargo nextest run --workspace "$@" || status=$?
else
    log "cargo-nextest not installed: cargo test --workspace $*"
    cargo test --workspace "$@" || status=$?
fi
if ((status != 0)); then
    log "ERROR: tests failed (exit $status)"
fi

# Run the deployment checks even when tests failed, so one run reports both.
if [[ -f scripts/validate-deploy.sh ]]; then
    log "scripts/validate-deploy.sh"
    if ! bash scripts/validate-deploy.sh; then
        log "ERROR: scripts/validate-deploy.sh failed"
        status=1
    fi
else
    log "ERROR: scripts/validate-deploy.sh is missing"
    status=1
fi

if ((status != 0)); then
    exit "$status"
fi
log "all tests and deployment checks passed"
