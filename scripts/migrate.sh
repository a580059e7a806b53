#!/usr/bin/env bash
# Apply the database migrations (shared by all services; one run covers all).
# Local: builds inventory-sync (release) and runs `inventory-sync migrate`.
# Docker engine: `docker compose run --rm migrate`.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DATASYNC_ROOT"

mode="$(deps_mode)" # exits on an invalid DATASYNC_DEPS
if [[ "$mode" == docker ]]; then
    ensure_deps_docker
    log "docker compose build migrate && docker compose run --rm migrate"
    compose build migrate || die "docker compose build migrate failed"
    compose run --rm migrate || die "migrations failed"
    exit 0
fi

ensure_postgres
ensure_env_file
bin="$(target_dir)/release/inventory-sync"
if [[ "${DATASYNC_SKIP_BUILD:-}" != 1 ]]; then
    have cargo || die "cargo not found: install Rust (https://rustup.rs), then re-run"
    log "cargo build --release -p inventory-sync --bin inventory-sync"
    cargo build --release -p inventory-sync --bin inventory-sync || die "cargo build failed"
fi
[[ -x "$bin" ]] || die "$bin not found"
log "$bin migrate"
"$bin" migrate || die "migrations failed"
log "migrations applied"
