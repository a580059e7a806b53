#!/usr/bin/env bash
# Shared helpers for scripts/up.sh, scripts/down.sh, scripts/test.sh, scripts/migrate.sh.
#
# Source it from a script that runs with `set -euo pipefail`:
#
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# This file deliberately does not change shell options itself (sourcing it from an
# interactive shell must not turn on errexit there); every function checks its own
# errors and calls `die` on failure.
#
# Knobs (environment):
#   DATASYNC_DEPS=auto|docker|local  how to provide PostgreSQL/NATS (default auto:
#                                    docker compose when `docker info` works, else
#                                    local Debian packages)
#   DATASYNC_DB_NAME                 database to create (default datasync)
#   TEST_DATABASE_URL                admin connection used to check access and
#                                    create the database (default
#                                    postgres://postgres@127.0.0.1:5432/postgres)

if [[ -n "${DATASYNC_LIB_LOADED:-}" ]]; then
    return 0
fi
DATASYNC_LIB_LOADED=1

DATASYNC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATASYNC_RUN_DIR="$DATASYNC_ROOT/.run"
DATASYNC_PG_HOST=127.0.0.1
DATASYNC_PG_PORT=5432
DATASYNC_NATS_HOST=127.0.0.1
DATASYNC_NATS_PORT=4222
DATASYNC_NATS_STORE=/var/lib/nats-server
DATASYNC_NATS_LOG=/var/log/nats-server.log
DATASYNC_NATS_PIDFILE=/run/datasync-nats-server.pid

# name:port of every service binary (cargo package == binary name).
# shellcheck disable=SC2034 # used by the scripts that source this file
DATASYNC_SERVICES=(
    crm-sync:8081
    erp-sync:8082
    inventory-sync:8083
    user-sync:8084
    conflict-resolver:8085
    sync-monitor:8086
)

# ---------------------------------------------------------------------------
# logging / small utilities
# ---------------------------------------------------------------------------

log() {
    printf '[datasync %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

warn() {
    log "WARNING: $*"
}

die() {
    log "ERROR: $*"
    exit 1
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# Run a command as root (directly, or through sudo when available).
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

_DATASYNC_APT_UPDATED=
apt_install() {
    have apt-get || die "apt-get not found: install $* yourself (this script supports Debian/Ubuntu)"
    if [[ -z "$_DATASYNC_APT_UPDATED" ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q \
            || die "apt-get update failed"
        _DATASYNC_APT_UPDATED=1
    fi
    log "apt-get install $*"
    # C.UTF-8 always exists; an unset/ungenerated locale makes initdb fail in
    # minimal containers when the postgresql package creates its first cluster.
    as_root env DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8 \
        apt-get install -y -q --no-install-recommends "$@" \
        || die "apt-get install $* failed"
}

# port_open HOST PORT: is something accepting TCP connections there?
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# wait_for_port HOST PORT SECONDS
wait_for_port() {
    local host=$1 port=$2 secs=$3 deadline
    deadline=$((SECONDS + secs))
    while ! port_open "$host" "$port"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 1
    done
}

random_hex() { # random_hex BYTES
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# ---------------------------------------------------------------------------
# docker
# ---------------------------------------------------------------------------

# ensure_test_tools: what the test suite needs besides PostgreSQL and NATS: a C toolchain (some
# crates build C), python3 with venv (deploy validation), Debian's chromium and chromedriver
# (the review pages are tested in a real headless browser), Debian's slapd (the LDAP pull is
# tested against a real OpenLDAP), and a nats-server binary for the
# tests that stop and restart a NATS of their own. Without a local one (docker mode) the Debian
# package is unpacked into the cache, not installed, so no second NATS service starts.
ensure_test_tools() {
    have cc || apt_install build-essential
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3 python3-venv
    { have chromium && have chromedriver; } || apt_install chromium chromium-driver
    # user-sync's directory tests run their own slapd (Debian's OpenLDAP) on a loopback port.
    { have slapd || [[ -x /usr/sbin/slapd ]]; } || apt_install slapd ldap-utils
    if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
        return 0
    fi
    if have nats-server; then
        NATS_SERVER_BIN="$(command -v nats-server)"
    elif [[ -x /usr/sbin/nats-server ]]; then
        NATS_SERVER_BIN=/usr/sbin/nats-server
    else
        local dir="${DATASYNC_CACHE:-${HOME:-/tmp}/.cache/datasync}/nats-server"
        if [[ ! -x "$dir/usr/sbin/nats-server" ]]; then
            have apt-get || die "no nats-server binary for the NATS restart tests: install nats-server or set NATS_SERVER_BIN"
            log "unpacking the nats-server package into $dir (for the NATS restart tests)"
            mkdir -p "$dir"
            [[ -n "$_DATASYNC_APT_UPDATED" ]] || { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"; _DATASYNC_APT_UPDATED=1; }
            (cd "$dir" && apt-get download nats-server >/dev/null && dpkg -x nats-server_*.deb . && rm -f nats-server_*.deb) \
                || die "could not unpack nats-server; install it or set NATS_SERVER_BIN"
        fi
        NATS_SERVER_BIN="$dir/usr/sbin/nats-server"
    fi
    export NATS_SERVER_BIN
}

have_docker_engine() {
    have docker || return 1
    timeout 15 docker info >/dev/null 2>&1
}

# Prints which dependency mode to use: docker or local.
deps_mode() {
    case "${DATASYNC_DEPS:-auto}" in
        docker) echo docker ;;
        local) echo local ;;
        auto)
            if have_docker_engine && compose_is_recent; then echo docker; else echo local; fi
            ;;
        *) die "DATASYNC_DEPS must be auto, docker or local (got '${DATASYNC_DEPS}')" ;;
    esac
}

# compose_is_recent: the Compose v2 plugin is 2.24 or newer (docker-compose.yml uses
# `env_file: {path, required}`); older ones make `auto` fall back to local dependencies.
compose_is_recent() {
    local version
    version="$(docker compose version --short 2>/dev/null)" || return 1
    version="${version#v}"
    local major="${version%%.*}" rest="${version#*.}"
    local minor="${rest%%.*}"
    [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
    if ((major > 2 || (major == 2 && minor >= 24))); then
        return 0
    fi
    warn "docker compose $version is older than 2.24: using local PostgreSQL/NATS instead (DATASYNC_DEPS=docker forces compose)"
    return 1
}

# compose ARGS...: the docker compose v2 plugin.
compose() {
    [[ -f "$DATASYNC_ROOT/docker-compose.yml" || -f "$DATASYNC_ROOT/compose.yaml" ]] \
        || die "no docker-compose.yml in $DATASYNC_ROOT"
    docker compose version >/dev/null 2>&1 \
        || die "docker engine found but the 'docker compose' plugin (2.24+) is not installed"
    (cd "$DATASYNC_ROOT" && docker compose "$@")
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

pg_admin_url() {
    echo "${TEST_DATABASE_URL:-$(env_or_dotenv TEST_DATABASE_URL "postgres://postgres@${DATASYNC_PG_HOST}:${DATASYNC_PG_PORT}/postgres")}"
}

pg_db_name() {
    local db="${DATASYNC_DB_NAME:-datasync}"
    [[ "$db" =~ ^[a-z_][a-z0-9_]*$ ]] || die "DATASYNC_DB_NAME must be a plain lower-case identifier"
    echo "$db"
}

pg_ready() {
    if have pg_isready; then
        pg_isready -q -h "$DATASYNC_PG_HOST" -p "$DATASYNC_PG_PORT" -t 3 >/dev/null 2>&1
    else
        port_open "$DATASYNC_PG_HOST" "$DATASYNC_PG_PORT"
    fi
}

wait_pg_ready() { # wait_pg_ready SECONDS
    local deadline=$((SECONDS + $1))
    until pg_ready; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# psql against the admin URL, password-less (exactly how the services/tests connect:
# they do not read ~/.pgpass), never prompting.
pg_admin_psql() {
    env -u PGPASSWORD PGPASSFILE=/nonexistent/datasync-no-pgpass PGCONNECT_TIMEOUT=5 \
        psql -w -X -q -v ON_ERROR_STOP=1 -d "$(pg_admin_url)" "$@"
}

# Prints "VERSION CLUSTER STATUS" of the local Debian cluster configured for port 5432.
pg_local_cluster() {
    have pg_lsclusters || return 0
    pg_lsclusters -h 2>/dev/null | awk -v p="$DATASYNC_PG_PORT" '$3 == p { print $1, $2, $4; exit }'
}

pg_create_local_cluster() {
    local ver name=main
    ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n1)"
    [[ -n "$ver" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    if [[ -d "/etc/postgresql/$ver/main" ]]; then
        name=datasync
    fi
    log "creating PostgreSQL cluster $ver/$name on port $DATASYNC_PG_PORT"
    as_root env LANG=C.UTF-8 LC_ALL=C.UTF-8 pg_createcluster --port "$DATASYNC_PG_PORT" "$ver" "$name" >&2 \
        || die "pg_createcluster $ver $name failed"
    mkdir -p "$DATASYNC_RUN_DIR" && touch "$DATASYNC_RUN_DIR/pg-cluster-$ver-$name"
}

# pg_cluster_is_ours VER NAME: the scripts created this cluster (its name is `datasync`, or
# pg_create_local_cluster left its marker). Only such a cluster's pg_hba.conf is ever changed.
pg_cluster_is_ours() {
    [[ "$2" == datasync || -f "$DATASYNC_RUN_DIR/pg-cluster-$1-$2" ]]
}

# dotenv_put KEY VALUE: sets KEY in .env (created with mode 600 if missing).
dotenv_put() {
    local env_file="$DATASYNC_ROOT/.env" tmp
    tmp="$(umask 077 && mktemp "$DATASYNC_ROOT/.env.XXXXXX")" || die "cannot write $env_file"
    if [[ -f "$env_file" ]]; then
        grep -v "^$1=" "$env_file" >"$tmp" || true
    fi
    printf '%s=%s\n' "$1" "$2" >>"$tmp"
    mv "$tmp" "$env_file"
}

# pg_create_app_role: on a cluster the scripts did not create, never touch pg_hba.conf: create
# (or reset) a `datasync` role with a generated password through the local socket, as the
# postgres OS user, keep it in .env (TEST_DATABASE_URL) and use it. Loopback password logins are
# allowed by Debian's default pg_hba.conf.
pg_create_app_role() {
    local pw admin
    have runuser || return 1
    pw="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)"
    as_root runuser -u postgres -- psql -X -q -p "$DATASYNC_PG_PORT" -v ON_ERROR_STOP=1 -c \
        "DO \$\$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'datasync') THEN ALTER ROLE datasync WITH LOGIN CREATEDB PASSWORD '$pw'; ELSE CREATE ROLE datasync WITH LOGIN CREATEDB PASSWORD '$pw'; END IF; END \$\$" \
        >&2 || return 1
    admin="postgres://datasync:${pw}@${DATASYNC_PG_HOST}:${DATASYNC_PG_PORT}/postgres"
    export TEST_DATABASE_URL="$admin"
    dotenv_put TEST_DATABASE_URL "$admin"
    log "created role datasync with a generated password (in .env as TEST_DATABASE_URL); pg_hba.conf left as it was"
}

# Let the `postgres` role log in over loopback TCP without a password (what
# DATABASE_URL/TEST_DATABASE_URL default to). Only for a cluster the scripts created
# (pg_cluster_is_ours), only loopback addresses, and only once (marker line). Returns 0 if it
# changed the file.
pg_configure_trust() {
    local ver=$1 name=$2 hba tmp
    hba="/etc/postgresql/$ver/$name/pg_hba.conf"
    as_root test -f "$hba" || die "cannot find $hba"
    if as_root grep -q '^# datasync-dev' "$hba"; then
        return 1
    fi
    log "allowing password-less loopback TCP logins for role postgres in $hba (local development only)"
    tmp="$(mktemp)"
    {
        echo '# datasync-dev: added by scripts/lib.sh (local development: role postgres may log in'
        echo '# over loopback TCP without a password). Remove these lines to undo.'
        echo 'host    all    postgres    127.0.0.1/32    trust'
        echo 'host    all    postgres    ::1/128         trust'
        echo '# datasync-dev end'
        as_root cat "$hba"
    } >"$tmp" || { rm -f "$tmp"; die "could not read $hba"; }
    # cp onto the existing file keeps its owner and mode.
    as_root cp "$tmp" "$hba" || { rm -f "$tmp"; die "could not write $hba"; }
    rm -f "$tmp"
    return 0
}

pg_start_local() {
    local cluster ver name status
    if ! have pg_lsclusters || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        log "PostgreSQL is not installed: installing it from the distribution packages"
        apt_install postgresql
        # The package may have created and (under systemd) started a cluster already.
        if wait_pg_ready 5; then
            return 0
        fi
    fi
    cluster="$(pg_local_cluster)"
    if [[ -z "$cluster" ]]; then
        pg_create_local_cluster
        cluster="$(pg_local_cluster)"
        [[ -n "$cluster" ]] || die "no PostgreSQL cluster on port $DATASYNC_PG_PORT after pg_createcluster"
    fi
    read -r ver name status <<<"$cluster"
    if pg_cluster_is_ours "$ver" "$name"; then
        pg_configure_trust "$ver" "$name" || true
    fi
    if [[ "$status" == online* ]]; then
        log "PostgreSQL cluster $ver/$name is already running (still starting up?)"
        return 0
    fi
    log "starting PostgreSQL cluster $ver/$name"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 \
        || die "pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
}

# Make sure the admin URL can log in; fix pg_hba.conf of the local cluster if not.
pg_ensure_access() {
    local cluster ver name status
    if pg_admin_psql -tAc 'SELECT 1' >/dev/null 2>&1; then
        return 0
    fi
    cluster="$(pg_local_cluster)"
    if [[ -n "$cluster" ]]; then
        read -r ver name status <<<"$cluster"
        if ! pg_cluster_is_ours "$ver" "$name"; then
            if pg_create_app_role && pg_admin_psql -tAc 'SELECT 1' >/dev/null 2>&1; then
                return 0
            fi
        elif pg_configure_trust "$ver" "$name"; then
            as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload >&2 \
                || die "pg_ctlcluster $ver $name reload failed"
            sleep 1
            if pg_admin_psql -tAc 'SELECT 1' >/dev/null 2>&1; then
                return 0
            fi
        fi
    fi
    pg_admin_psql -tAc 'SELECT 1' >/dev/null || true # show psql's error
    die "PostgreSQL is up but cannot log in as $(pg_admin_url | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#'); set TEST_DATABASE_URL / DATABASE_URL in .env or allow that role in pg_hba.conf"
}

pg_ensure_database() {
    local db exists
    db="$(pg_db_name)"
    exists="$(pg_admin_psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" \
        || die "could not query pg_database"
    if [[ "$exists" == 1 ]]; then
        log "PostgreSQL: database $db exists"
        return 0
    fi
    log "PostgreSQL: creating database $db"
    if ! pg_admin_psql -c "CREATE DATABASE \"$db\"" >/dev/null; then
        # Lost a race with a concurrent run?
        exists="$(pg_admin_psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" || true
        [[ "$exists" == 1 ]] || die "CREATE DATABASE $db failed"
    fi
}

ensure_postgres() {
    if pg_ready; then
        log "PostgreSQL: already running on $DATASYNC_PG_HOST:$DATASYNC_PG_PORT"
    else
        pg_start_local
        log "PostgreSQL: waiting for $DATASYNC_PG_HOST:$DATASYNC_PG_PORT"
        wait_pg_ready 60 || die "PostgreSQL did not become ready on $DATASYNC_PG_HOST:$DATASYNC_PG_PORT within 60s"
    fi
    if ! have psql; then
        log "psql not found: installing postgresql-client"
        apt_install postgresql-client
    fi
    pg_ensure_access
    pg_ensure_database
}

# ---------------------------------------------------------------------------
# NATS
# ---------------------------------------------------------------------------

# nats_has_jetstream [HOST PORT]: reads the server's INFO greeting; succeeds when it
# advertises JetStream.
nats_has_jetstream() {
    local host="${1:-$DATASYNC_NATS_HOST}" port="${2:-$DATASYNC_NATS_PORT}" line
    # shellcheck disable=SC2016 # expanded by the inner bash
    line="$(timeout 6 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
        IFS= read -r -t 5 l <&3 || true
        printf "%s" "$l"' _ "$host" "$port" 2>/dev/null)" || return 1
    [[ "$line" == INFO* && "$line" == *'"jetstream":true'* ]]
}

nats_server_bin() {
    if have nats-server; then
        command -v nats-server
    elif [[ -x /usr/sbin/nats-server ]]; then
        echo /usr/sbin/nats-server
    fi
}

nats_start_local() {
    local bin
    bin="$(nats_server_bin)"
    if [[ -z "$bin" ]]; then
        log "nats-server is not installed: installing it from the distribution packages"
        apt_install nats-server
        bin="$(nats_server_bin)"
        [[ -n "$bin" ]] || die "nats-server still not found after apt-get install"
        # Under systemd the package starts its own service from /etc/nats-server.conf,
        # which listens on 4222 *without* JetStream. Replace it with ours.
        if have systemctl && [[ -d /run/systemd/system ]] \
            && systemctl is-active --quiet nats-server 2>/dev/null; then
            log "stopping and disabling the packaged nats-server.service (it has no JetStream)"
            as_root systemctl disable --now nats-server >&2 || die "could not stop nats-server.service"
            local i
            for i in $(seq 1 10); do
                port_open "$DATASYNC_NATS_HOST" "$DATASYNC_NATS_PORT" || break
                sleep 1
            done
        fi
    fi
    as_root mkdir -p "$DATASYNC_NATS_STORE" || die "cannot create $DATASYNC_NATS_STORE"
    log "starting nats-server with JetStream (store $DATASYNC_NATS_STORE, log $DATASYNC_NATS_LOG)"
    # The pid file scopes --oknodo to *our* daemon: another nats-server process on a
    # different port must not make start-stop-daemon think the job is already done.
    as_root start-stop-daemon --start --oknodo --background \
        --make-pidfile --pidfile "$DATASYNC_NATS_PIDFILE" \
        --exec "$bin" -- \
        -a "$DATASYNC_NATS_HOST" -p "$DATASYNC_NATS_PORT" -js \
        -sd "$DATASYNC_NATS_STORE" -l "$DATASYNC_NATS_LOG" >&2 \
        || die "start-stop-daemon could not start $bin"
}

ensure_nats() {
    if port_open "$DATASYNC_NATS_HOST" "$DATASYNC_NATS_PORT"; then
        log "NATS: already running on $DATASYNC_NATS_HOST:$DATASYNC_NATS_PORT"
    else
        nats_start_local
        log "NATS: waiting for $DATASYNC_NATS_HOST:$DATASYNC_NATS_PORT"
        if ! wait_for_port "$DATASYNC_NATS_HOST" "$DATASYNC_NATS_PORT" 30; then
            as_root tail -n 20 "$DATASYNC_NATS_LOG" >&2 || true
            die "nats-server did not open $DATASYNC_NATS_HOST:$DATASYNC_NATS_PORT within 30s (log: $DATASYNC_NATS_LOG)"
        fi
    fi
    nats_has_jetstream \
        || die "the NATS server on $DATASYNC_NATS_HOST:$DATASYNC_NATS_PORT does not advertise JetStream; restart it with -js (e.g. stop it and re-run this script)"
    log "NATS: JetStream enabled"
}

# ---------------------------------------------------------------------------
# dependencies via docker compose
# ---------------------------------------------------------------------------

# docker-compose.yml: PostgreSQL superuser `datasync` (password POSTGRES_PASSWORD, dev
# default datasync) with database datasync; host ports POSTGRES_HOST_PORT (5432) and
# NATS_HOST_PORT (4222). Those knobs are read from the environment or .env, as compose does.
DATASYNC_DOCKER_PG_USER=datasync

# env_or_dotenv KEY DEFAULT: $KEY from the environment, else from .env, else DEFAULT.
env_or_dotenv() {
    local key=$1 def=$2 val=
    if [[ -n "${!key:-}" ]]; then
        printf '%s\n' "${!key}"
        return 0
    fi
    if [[ -f "$DATASYNC_ROOT/.env" ]]; then
        val="$(sed -nE "s/^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=[[:space:]]*//p" \
            "$DATASYNC_ROOT/.env" | tail -n1)"
        val="${val%[[:space:]]}"
        if [[ "$val" == \"*\" || "$val" == \'*\' ]]; then
            val="${val:1:${#val}-2}"
        fi
    fi
    printf '%s\n' "${val:-$def}"
}

urlencode() { # byte-wise percent-encoding of everything but unreserved characters
    local LC_ALL=C s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case "$c" in
            [A-Za-z0-9._~-]) out+="$c" ;;
            *) out+="$(printf '%%%02X' "'$c")" ;;
        esac
    done
    printf '%s\n' "$out"
}

ensure_deps_docker() {
    local db i exists pg_port nats_port pg_pass user="$DATASYNC_DOCKER_PG_USER"
    ensure_env_file # compose interpolates ${ADMIN_TOKEN} etc. from .env
    pg_port="$(env_or_dotenv POSTGRES_HOST_PORT 5432)"
    nats_port="$(env_or_dotenv NATS_HOST_PORT 4222)"
    pg_pass="$(env_or_dotenv POSTGRES_PASSWORD datasync)"

    log "using docker compose: up -d postgres nats mailpit otel-collector"
    compose up -d postgres nats mailpit otel-collector \
        || die "docker compose up failed (host port $pg_port or $nats_port taken by a local server? set POSTGRES_HOST_PORT / NATS_HOST_PORT in .env, or use DATASYNC_DEPS=local)"

    log "PostgreSQL: waiting for the postgres container"
    # Over TCP like the compose healthcheck: during first-run initialisation the image
    # runs a temporary server on the unix socket only.
    for i in $(seq 1 90); do
        if compose exec -T postgres pg_isready -q -h 127.0.0.1 -U "$user" -d datasync >/dev/null 2>&1; then
            break
        fi
        ((i < 90)) || die "postgres container not ready after 90s (docker compose logs postgres)"
        sleep 1
    done
    wait_for_port 127.0.0.1 "$pg_port" 30 \
        || die "the postgres container is not reachable on 127.0.0.1:$pg_port"
    db="$(pg_db_name)"
    exists="$(compose exec -T postgres psql -X -U "$user" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>/dev/null | tr -d '[:space:]')" || exists=
    if [[ "$exists" == 1 ]]; then
        log "PostgreSQL: database $db exists"
    else
        log "PostgreSQL: creating database $db"
        compose exec -T postgres psql -X -q -U "$user" -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null \
            || warn "could not create database $db in the postgres container"
    fi

    log "NATS: waiting for 127.0.0.1:$nats_port"
    wait_for_port 127.0.0.1 "$nats_port" 60 \
        || die "the nats container is not reachable on 127.0.0.1:$nats_port"
    nats_has_jetstream 127.0.0.1 "$nats_port" || die "the nats container does not advertise JetStream"
    log "NATS: JetStream enabled"

    # The tests connect from the host; the container has no `postgres` role.
    if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
        pg_pass="$(urlencode "$pg_pass")"
        export TEST_DATABASE_URL="postgres://$user:$pg_pass@127.0.0.1:$pg_port/postgres"
        log "TEST_DATABASE_URL=postgres://$user:***@127.0.0.1:$pg_port/postgres"
    fi
    if [[ -z "${TEST_NATS_URL:-}" ]]; then
        export TEST_NATS_URL="nats://127.0.0.1:$nats_port"
        log "TEST_NATS_URL=$TEST_NATS_URL"
    fi
}

ensure_deps() {
    local mode
    mode="$(deps_mode)"
    if [[ "$mode" == docker ]]; then
        ensure_deps_docker
    else
        log "using local PostgreSQL and NATS (no docker engine, or DATASYNC_DEPS=local)"
        ensure_postgres
        ensure_nats
        # The tests' admin connection: the environment's, .env's (a generated role), or the
        # default superuser over loopback.
        TEST_DATABASE_URL="$(pg_admin_url)"
        export TEST_DATABASE_URL
    fi
}

# ---------------------------------------------------------------------------
# .env
# ---------------------------------------------------------------------------

# Creates $DATASYNC_ROOT/.env with fresh random secrets unless it exists already.
# Never overwrites and never prints the secrets.
ensure_env_file() {
    local env_file="$DATASYNC_ROOT/.env" tmp
    if [[ -e "$env_file" ]]; then
        log ".env exists: leaving it untouched"
        return 0
    fi
    tmp="$(umask 077 && mktemp "$DATASYNC_ROOT/.env.XXXXXX")" || die "cannot create a temporary file in $DATASYNC_ROOT"
    {
        echo "# datasync local settings, generated by scripts/lib.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
        echo "# Holds secrets: keep it private and never commit it. Delete it to regenerate."
        echo "#"
        echo "# Connection defaults (uncomment to change):"
        echo "# DATABASE_URL=postgres://postgres@127.0.0.1:5432/datasync"
        echo "# NATS_URL=nats://127.0.0.1:4222"
        echo "# LOG_FORMAT=pretty"
        echo "RUST_LOG=info"
        echo
        echo "ADMIN_TOKEN=$(random_hex 32)"
        echo
        echo "# inventory-sync: comma separated name:key pairs (a key may only submit adjustments"
        echo "# whose source is its name) / comma separated name:secret pairs for signed requests"
        echo "INVENTORY_API_KEYS=manual:$(random_hex 24),pos:$(random_hex 24),wms:$(random_hex 24),ecommerce:$(random_hex 24),erp:$(random_hex 24)"
        echo "INVENTORY_HMAC_SECRETS=manual:$(random_hex 32),erp:$(random_hex 32)"
        echo
        echo "# crm-sync: Standard Webhooks secret(s) of the CRM's webhooks (comma separated during"
        echo "# a rotation); CRM_HUBSPOT_CLIENT_SECRETS for HubSpot v3 signatures"
        echo "CRM_WEBHOOK_SECRETS=whsec_$(head -c 24 /dev/urandom | base64 | tr -d '\n')"
        echo
        echo "# erp-sync: X-API-Key value(s) of the ERP's webhooks; ERP_WEBHOOK_SECRETS for signed ones"
        echo "ERP_WEBHOOK_API_KEYS=$(random_hex 24)"
        echo
        echo "# Sync targets. Unset means \"target not configured\". For a local sandbox use e.g."
        echo "# ERP_BASE_URL=http://127.0.0.1:<port>"
        echo "# ERP_API_KEY="
        echo "# SHOP_BASE_URL=http://127.0.0.1:<port>"
        echo "# SHOP_ACCESS_TOKEN="
        echo "# POS_BASE_URL=http://127.0.0.1:<port>"
        echo "# POS_API_KEY="
        echo "# WMS_BASE_URL=http://127.0.0.1:<port>"
        echo "# WMS_API_KEY="
    } >"$tmp" || { rm -f "$tmp"; die "cannot write $tmp"; }
    # ln is atomic and refuses to replace an existing file (a concurrent run may win).
    if ln "$tmp" "$env_file" 2>/dev/null; then
        log "created .env with random ADMIN_TOKEN, INVENTORY_API_KEYS, INVENTORY_HMAC_SECRETS and CRM_WEBHOOK_SECRETS (mode 600)"
    elif [[ -e "$env_file" ]]; then
        log ".env exists: leaving it untouched"
    else
        mv -n "$tmp" "$env_file" || { rm -f "$tmp"; die "cannot create $env_file"; }
        log "created .env with random ADMIN_TOKEN, INVENTORY_API_KEYS, INVENTORY_HMAC_SECRETS and CRM_WEBHOOK_SECRETS (mode 600)"
    fi
    rm -f "$tmp"
}

# ---------------------------------------------------------------------------
# locally started service processes (.run/pids/<svc>.pid)
# ---------------------------------------------------------------------------

# Where cargo puts binaries (honours CARGO_TARGET_DIR, relative to the repo root).
target_dir() {
    local dir="${CARGO_TARGET_DIR:-${CARGO_BUILD_TARGET_DIR:-target}}"
    if [[ "$dir" != /* ]]; then
        dir="$DATASYNC_ROOT/$dir"
    fi
    echo "$dir"
}

# Is PID a running instance of service SVC (guards against recycled pids)?
pid_is_service() {
    local pid=$1 svc=$2 argv0
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        argv0="$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)"
        [[ "$(basename -- "$argv0")" == "$svc" ]] || return 1
    fi
    return 0
}

stop_local_services() {
    local pid_dir="$DATASYNC_RUN_DIR/pids" f svc pid i
    [[ -d "$pid_dir" ]] || return 0
    for f in "$pid_dir"/*.pid; do
        [[ -e "$f" ]] || continue
        svc="$(basename -- "$f" .pid)"
        pid="$(cat -- "$f" 2>/dev/null || true)"
        if pid_is_service "$pid" "$svc"; then
            log "stopping $svc (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 1 100); do
                pid_is_service "$pid" "$svc" || break
                sleep 0.2
            done
            if pid_is_service "$pid" "$svc"; then
                warn "$svc (pid $pid) did not exit after 20s: sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.5
            fi
        fi
        rm -f -- "$f"
    done
}
