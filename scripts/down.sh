#!/usr/bin/env bash
# Stop what scripts/up.sh started: the six local service processes (.run/pids/), or,
# when up.sh used docker compose, `docker compose down` (volumes are kept).
# PostgreSQL and NATS started by the local path keep running (tests use them too).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DATASYNC_ROOT"

mode="$(cat "$DATASYNC_RUN_DIR/mode" 2>/dev/null || true)"

stop_local_services

if [[ "$mode" == docker ]]; then
    if have_docker_engine; then
        log "docker compose down"
        compose down || die "docker compose down failed"
    else
        warn "up.sh used docker compose but no docker engine is reachable now: nothing to stop there"
    fi
fi
rm -f "$DATASYNC_RUN_DIR/mode"
log "stopped the datasync services"
if [[ "$mode" != docker ]]; then
    # Say what is left running, and why: the local path never stops servers it may share.
    if pg_ready; then
        log "left running: PostgreSQL on $DATASYNC_PG_HOST:$DATASYNC_PG_PORT (the tests use it too; stop it with pg_ctlcluster)"
    fi
    if nats_has_jetstream 2>/dev/null; then
        log "left running: NATS on $DATASYNC_NATS_HOST:$DATASYNC_NATS_PORT (the tests use it too; stop it with kill, or systemctl stop nats-server)"
    fi
fi
