#!/usr/bin/env bash
# Static validation of the deployment artefacts; needs no Docker engine and no cluster.
#
#   scripts/validate-deploy.sh
#
# 1. Renders deploy/k8s/base and every overlay with `kubectl kustomize` (prod includes
#    deploy/nats, deploy/postgres and deploy/otel/k8s) and validates the core Kubernetes kinds
#    against the OpenAPI schemas bundled in kubernetes-validate (offline, strict: unknown fields
#    are errors). Custom resources (KEDA, Prometheus Operator, CloudNativePG, cert-manager) have
#    no schema there and are not downloaded: check_deploy.py checks their structure and names.
# 2. Validates docker-compose.yml against the Compose Specification JSON schema.
# 3. Runs scripts/check_deploy.py: cross-file rules a schema cannot express (ports, probes,
#    Secret references, grace periods, Pod Security `restricted`, NetworkPolicy reachability,
#    Ingress routes, autoscaling, NATS and PostgreSQL wiring, the Dockerfile's build shape).
# 4. deploy/monitoring: the Grafana dashboard parses, and `promtool check rules` accepts the
#    alert rules where promtool is installed (Debian: `prometheus`).
#
# Tools go into a Python venv under the cache dir, installed once and reused.
#
# Environment:
#   DATASYNC_CACHE   cache dir (default ~/.cache/datasync): the validation venv
#   K8S_VERSION      Kubernetes version to validate against (default 1.32.0)
#   KUBECTL          kubectl binary (default: kubectl on PATH)
#   COMPOSE_SCHEMA   path to compose-spec.json (default: ../shared/schemas/compose-spec.json
#                    next to the repo if present, else the schema bundled with check-jsonschema)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DATASYNC_CACHE:-${HOME:-/tmp}/.cache/datasync}"
VENV="$CACHE/venv"
K8S_VERSION="${K8S_VERSION:-1.32.0}"
KUBECTL="${KUBECTL:-kubectl}"
# Pinned so that a rerun validates against the same schemas; bump deliberately.
PY_REQUIREMENTS=("kubernetes-validate==1.37.0" "check-jsonschema==0.39.0")

fail() {
    echo "FAIL $*" >&2
    exit 1
}
ok() { echo "OK   $*"; }

ensure_venv() {
    command -v python3 >/dev/null || fail "python3 not found (needed for the validation venv)"
    mkdir -p "$CACHE"
    # Serialise concurrent runs while the venv is (re)built.
    if command -v flock >/dev/null; then
        exec 9>"$CACHE/.validate-deploy.lock"
        flock 9
    fi
    # Recreate a venv whose interpreter has gone (e.g. Python upgraded underneath it).
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || fail "could not create a venv at $VENV (python3-venv missing?)"
    fi
    local stamp="$VENV/.datasync-requirements" want="${PY_REQUIREMENTS[*]}"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] ||
        [[ ! -x "$VENV/bin/kubernetes-validate" || ! -x "$VENV/bin/check-jsonschema" ]]; then
        echo "installing ${PY_REQUIREMENTS[*]} into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}" ||
            fail "pip install ${PY_REQUIREMENTS[*]} failed (is PyPI reachable?)"
        printf '%s' "$want" >"$stamp"
    fi
}

# compose_schema_args: the check-jsonschema arguments naming the Compose schema. An explicit
# COMPOSE_SCHEMA wins, then the copy next to the repository, then the schema check-jsonschema
# bundles (offline, so a clean clone anywhere validates without the network).
compose_schema_args() {
    if [[ -n "${COMPOSE_SCHEMA:-}" ]]; then
        [[ -f "$COMPOSE_SCHEMA" ]] || fail "COMPOSE_SCHEMA=$COMPOSE_SCHEMA does not exist"
        printf '%s\n' --schemafile "$COMPOSE_SCHEMA"
    elif [[ -f "$ROOT/../shared/schemas/compose-spec.json" ]]; then
        printf '%s\n' --schemafile "$ROOT/../shared/schemas/compose-spec.json"
    else
        printf '%s\n' --builtin-schema vendor.compose-spec
    fi
}

# ensure_kubectl: kubectl >= 1.27 (its built-in kustomize v5 renders the overlays). Debian's
# kubernetes-client is too old, so a missing kubectl is fetched from dl.k8s.io into the cache.
ensure_kubectl() {
    command -v "$KUBECTL" >/dev/null && return 0
    local arch bin
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) fail "kubectl not found and no download for $(uname -m): install kubectl >= 1.27 or set KUBECTL" ;;
    esac
    bin="$CACHE/kubectl-v$K8S_VERSION"
    if [[ ! -x "$bin" ]]; then
        mkdir -p "$CACHE"
        if ! curl -fsSL --max-time 300 -o "$bin.tmp" "https://dl.k8s.io/release/v$K8S_VERSION/bin/linux/$arch/kubectl"; then
            rm -f "$bin.tmp"
            fail "kubectl not found and the download failed: install kubectl >= 1.27 or set KUBECTL"
        fi
        chmod +x "$bin.tmp"
        mv "$bin.tmp" "$bin"
    fi
    KUBECTL="$bin"
}

validate_k8s() {
    ensure_kubectl
    local tmp dir name out count
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: $tmp is local
    trap "rm -rf '$tmp'" EXIT

    for dir in "$ROOT/deploy/k8s/base" "$ROOT"/deploy/k8s/overlays/*/; do
        dir="${dir%/}"
        name="$(basename "$dir")"
        [[ -f "$dir/kustomization.yaml" ]] || fail "$dir has no kustomization.yaml"

        if ! "$KUBECTL" kustomize "$dir" >"$tmp/$name.yaml" 2>"$tmp/$name.err"; then
            cat "$tmp/$name.err" >&2
            fail "kustomize could not render ${dir#"$ROOT"/}"
        fi
        # Warnings mean deprecated kustomize fields: keep the files current.
        if [[ -s "$tmp/$name.err" ]]; then
            cat "$tmp/$name.err" >&2
            fail "kustomize warned while rendering ${dir#"$ROOT"/}"
        fi

        # Custom resources are set aside (check_deploy.py knows their kinds); for the rest,
        # --quiet prints nothing for valid resources, so any output is a problem: an ERROR, or a
        # WARN for a kind/apiVersion it has no schema for (which it would not check).
        "$VENV/bin/python" "$ROOT/scripts/check_deploy.py" split "$tmp/$name.yaml" "$tmp/$name.core.yaml"
        if ! out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$tmp/$name.core.yaml" 2>&1)" ||
            [[ -n "$out" ]]; then
            echo "$out" >&2
            fail "${dir#"$ROOT"/} does not validate against Kubernetes $K8S_VERSION"
        fi

        "$VENV/bin/python" "$ROOT/scripts/check_deploy.py" k8s "$name" "$tmp/$name.yaml" ||
            fail "${dir#"$ROOT"/} breaks the deployment rules above"

        count="$(grep -c '^kind:' "$tmp/$name.yaml")"
        core="$(grep -c '^kind:' "$tmp/$name.core.yaml" || true)"
        ok "k8s ${dir#"$ROOT"/}: $count resources ($core core kinds valid against Kubernetes $K8S_VERSION, strict; $((count - core)) custom resources checked structurally), consistent"
    done

    # Not part of any kustomization, but it must stay applicable.
    local example
    for example in "$ROOT"/deploy/k8s/overlays/*/secret.example.yaml; do
        [[ -f "$example" ]] || continue
        if ! out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$example" 2>&1)" ||
            [[ -n "$out" ]]; then
            echo "$out" >&2
            fail "${example#"$ROOT"/} does not validate"
        fi
        ok "k8s ${example#"$ROOT"/}: valid"
    done
}

validate_compose() {
    local -a schema
    mapfile -t schema < <(compose_schema_args)
    if ! out="$("$VENV/bin/check-jsonschema" "${schema[@]}" "$ROOT/docker-compose.yml" 2>&1)"; then
        echo "$out" >&2
        fail "docker-compose.yml does not match the Compose schema (${schema[*]})"
    fi
    "$VENV/bin/python" "$ROOT/scripts/check_deploy.py" compose "$ROOT/docker-compose.yml" ||
        fail "docker-compose.yml breaks the deployment rules above"
    ok "docker-compose.yml: valid against the Compose schema and consistent"
}

validate_files() {
    "$VENV/bin/python" "$ROOT/scripts/check_deploy.py" files ||
        fail "Dockerfile / .dockerignore / deploy/nats / deploy/otel break the rules above"
    ok "Dockerfile, .dockerignore, deploy/nats/nats.conf, deploy/otel/collector.yaml, deploy/otel/k8s/collector.yaml: consistent"
}

validate_monitoring() {
    python3 -m json.tool "$ROOT/deploy/monitoring/grafana-dashboard.json" >/dev/null ||
        fail "deploy/monitoring/grafana-dashboard.json is not JSON"
    if command -v promtool >/dev/null; then
        promtool check rules "$ROOT/deploy/monitoring/prometheus-rules.yml" >/dev/null ||
            fail "promtool refuses deploy/monitoring/prometheus-rules.yml"
        ok "deploy/monitoring: the Grafana dashboard is JSON; promtool accepts the alert rules"
    else
        ok "deploy/monitoring: the Grafana dashboard is JSON (no promtool here: the rules' metric names are checked by sync-monitor's tests)"
    fi
}

ensure_venv
validate_k8s
validate_compose
validate_files
validate_monitoring
echo "deploy artefacts OK"
