#!/usr/bin/env bash
# Start the whole datasync stack for local development.
#
#   ./scripts/up.sh            # or: make up
#
# Without a docker engine: makes sure PostgreSQL and NATS (JetStream) run locally
# (installing the Debian packages if needed), creates .env with random secrets if it
# is missing, builds the release binaries, runs the migrations, starts the sandbox of simulated
# external systems (DATASYNC_SANDBOX=0 skips it) and (re)starts the six
# services in the background (pids in .run/pids/, logs in .run/logs/).
# With a docker engine (`docker info` works): `docker compose up -d --build`.
# Either way it then waits for every /readyz. Re-running restarts cleanly.
#
# Environment: READY_TIMEOUT (seconds, default 60), DATASYNC_DEPS=auto|docker|local,
# DATASYNC_SKIP_BUILD=1 (reuse the binaries already in the target dir),
# CARGO_TARGET_DIR (honoured).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DATASYNC_ROOT"

READY_TIMEOUT="${READY_TIMEOUT:-60}"
LOG_DIR="$DATASYNC_RUN_DIR/logs"
PID_DIR="$DATASYNC_RUN_DIR/pids"

http_status() { # http_status URL -> prints the HTTP status code (000 when unreachable)
    curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true
}

# svc_addr MODE SVC PORT: host:port where the service answers. Under compose it asks
# `docker compose port` (inventory-sync publishes an ephemeral host port so it can scale).
svc_addr() {
    local mode=$1 svc=$2 port=$3 addr
    if [[ "$mode" == docker ]]; then
        addr="$(compose port "$svc" "$port" 2>/dev/null | head -n1)" || addr=
        addr="${addr/0.0.0.0:/127.0.0.1:}"
        printf '%s\n' "$addr"
    else
        printf '127.0.0.1:%s\n' "$port"
    fi
}

# wait_ready MODE: waits for every service's /readyz; prints failing logs; returns 1 on failure.
wait_ready() {
    local mode=$1 deadline entry svc port pid code addr
    local -a pending=() still=() failed=()
    for entry in "${DATASYNC_SERVICES[@]}"; do
        pending+=("$entry")
    done
    log "waiting up to ${READY_TIMEOUT}s for /readyz of ${#pending[@]} services"
    deadline=$((SECONDS + READY_TIMEOUT))
    while ((${#pending[@]} > 0)); do
        still=()
        for entry in "${pending[@]}"; do
            svc="${entry%%:*}" port="${entry##*:}"
            addr="$(svc_addr "$mode" "$svc" "$port")"
            code=000
            if [[ -n "$addr" ]]; then
                code="$(http_status "http://$addr/readyz")"
            fi
            if [[ "$code" == 200 ]]; then
                log "$svc ready on $addr"
                continue
            fi
            if [[ "$mode" == local ]]; then
                pid="$(cat "$PID_DIR/$svc.pid" 2>/dev/null || true)"
                # kill -0 only: right after setsid/nohup the process name may not be the
                # service's yet.
                if ! kill -0 "$pid" 2>/dev/null; then
                    log "$svc exited before becoming ready"
                    failed+=("$svc")
                    continue
                fi
            fi
            still+=("$entry")
        done
        pending=("${still[@]}")
        ((${#pending[@]} > 0)) || break
        if ((SECONDS >= deadline)); then
            for entry in "${pending[@]}"; do
                svc="${entry%%:*}" port="${entry##*:}"
                addr="$(svc_addr "$mode" "$svc" "$port")"
                log "$svc not ready after ${READY_TIMEOUT}s (last /readyz status: $(http_status "http://${addr:-127.0.0.1:$port}/readyz"))"
                failed+=("$svc")
            done
            break
        fi
        sleep 1
    done

    ((${#failed[@]} == 0)) && return 0
    for svc in "${failed[@]}"; do
        echo >&2
        if [[ "$mode" == local ]]; then
            echo "----- last 20 lines of $LOG_DIR/$svc.log -----" >&2
            tail -n 20 "$LOG_DIR/$svc.log" >&2 2>/dev/null || echo "(no log)" >&2
        else
            echo "----- last 20 log lines of compose service $svc -----" >&2
            compose logs --no-color --tail 20 "$svc" >&2 || true
        fi
    done
    echo >&2
    log "ERROR: not ready: ${failed[*]}"
    return 1
}

print_summary() {
    local mode=$1 entry svc port addr
    echo
    printf '%-18s %-37s %-37s %s\n' SERVICE READY METRICS OPENAPI
    for entry in "${DATASYNC_SERVICES[@]}"; do
        svc="${entry%%:*}" port="${entry##*:}"
        addr="$(svc_addr "$mode" "$svc" "$port")"
        addr="${addr:-127.0.0.1:$port}"
        printf '%-18s %-37s %-37s %s\n' "$svc" \
            "http://$addr/readyz" \
            "http://$addr/metrics" \
            "http://$addr/openapi.json"
    done
    echo
    if [[ "$mode" == local ]]; then
        echo "Logs:   $LOG_DIR/<service>.log  (JSON lines)"
        echo "Follow: tail -F $LOG_DIR/*.log"
        echo "Stop:   ./scripts/down.sh   (or: make down)"
    else
        echo "(inventory-sync gets an ephemeral host port under compose: docker compose port inventory-sync 8083)"
        echo "Logs:   docker compose logs <service>"
        echo "Follow: docker compose logs -f"
        echo "Stop:   ./scripts/down.sh   (or: make down)"
    fi
}

up_docker() {
    have curl || apt_install curl ca-certificates
    stop_local_services # a previous local run would hold the ports
    ensure_deps_docker
    log "docker compose up -d --build"
    compose up -d --build || die "docker compose up -d --build failed"
    mkdir -p "$DATASYNC_RUN_DIR"
    echo docker >"$DATASYNC_RUN_DIR/mode"
    wait_ready docker || exit 1
    print_summary docker
}

# start_sandbox BIN_DIR: the simulated external systems (tests/sandbox) as a local process, so
# the fan-out can be watched without real SaaS accounts. Connector variables that .env (or the
# environment) does not set are pointed at it; DATASYNC_SANDBOX=0 skips it.
start_sandbox() {
    local bin_dir=$1 base line key value log_file="$LOG_DIR/sandbox.log"
    base="${SANDBOX_PORT_BASE:-9100}"
    [[ -x "$bin_dir/sandbox" ]] || die "$bin_dir/sandbox not found (build failed?)"
    if port_open 127.0.0.1 $((base + 2)); then
        die "port $((base + 2)) (sandbox) is in use; set SANDBOX_PORT_BASE, or DATASYNC_SANDBOX=0 to skip the sandbox"
    fi
    [[ -f "$log_file" ]] && mv -f "$log_file" "$log_file.prev"
    SANDBOX_PORT_BASE="$base" setsid nohup "$bin_dir/sandbox" serve </dev/null >>"$log_file" 2>&1 &
    echo "$!" >"$PID_DIR/sandbox.pid"
    wait_for_port 127.0.0.1 $((base + 2)) 15 || die "the sandbox did not start (see $log_file)"
    while IFS= read -r line; do
        key="${line%%=*}" value="${line#*=}"
        if [[ -z "$(env_or_dotenv "$key" "")" ]]; then
            export "$key=$value"
        fi
    done < <(SANDBOX_PORT_BASE="$base" "$bin_dir/sandbox" env)
    log "sandbox: simulated CRM, ERP, shop, POS, WMS, Slack, PagerDuty and SMTP on 127.0.0.1:$((base + 1))-$((base + 8)); connectors not configured in .env use it (DATASYNC_SANDBOX=0 to skip)"
}

up_local() {
    local bin_dir entry svc port pid log_file
    have curl || apt_install curl ca-certificates
    ensure_postgres
    ensure_nats
    ensure_env_file

    bin_dir="$(target_dir)/release"
    if [[ "${DATASYNC_SKIP_BUILD:-}" == 1 ]]; then
        log "DATASYNC_SKIP_BUILD=1: using the binaries in $bin_dir"
    else
        have cargo || die "cargo not found: install Rust (https://rustup.rs), then re-run"
        log "cargo build --release --workspace --bins (this takes a while the first time)"
        cargo build --release --workspace --bins || die "cargo build failed"
    fi
    for entry in "${DATASYNC_SERVICES[@]}"; do
        svc="${entry%%:*}"
        [[ -x "$bin_dir/$svc" ]] || die "$bin_dir/$svc not found (build failed or CARGO_TARGET_DIR differs?)"
    done

    log "running migrations: $bin_dir/inventory-sync migrate"
    "$bin_dir/inventory-sync" migrate || die "migrations failed"

    stop_local_services
    mkdir -p "$LOG_DIR" "$PID_DIR"
    echo local >"$DATASYNC_RUN_DIR/mode"

    if [[ "${DATASYNC_SANDBOX:-1}" == 1 ]]; then
        start_sandbox "$bin_dir"
    fi

    for entry in "${DATASYNC_SERVICES[@]}"; do
        svc="${entry%%:*}" port="${entry##*:}"
        if port_open 127.0.0.1 "$port"; then
            die "port $port (for $svc) is already in use by a process this script did not start; stop it and re-run (ss -ltnp 'sport = :$port')"
        fi
    done

    for entry in "${DATASYNC_SERVICES[@]}"; do
        svc="${entry%%:*}" port="${entry##*:}"
        log_file="$LOG_DIR/$svc.log"
        if [[ -f "$log_file" ]]; then
            mv -f "$log_file" "$log_file.prev"
        fi
        # setsid + nohup: keep running after this script/terminal goes away; cwd is the
        # repo root so the binaries pick up .env.
        HTTP_HOST="${HTTP_HOST:-127.0.0.1}" HTTP_PORT="$port" LOG_FORMAT=json \
            setsid nohup "$bin_dir/$svc" serve </dev/null >>"$log_file" 2>&1 &
        pid=$!
        echo "$pid" >"$PID_DIR/$svc.pid"
        log "started $svc (pid $pid, port $port, log .run/logs/$svc.log)"
    done

    wait_ready local || {
        log "the other services keep running; fix the problem and re-run ./scripts/up.sh, or ./scripts/down.sh"
        exit 1
    }
    print_summary local
}

main() {
    local mode
    mode="$(deps_mode)" # exits on an invalid DATASYNC_DEPS
    if [[ "$mode" == docker ]]; then
        up_docker
    else
        up_local
    fi
}

main "$@"
