#!/usr/bin/env bash
# Property-based API fuzzing of a running service with schemathesis: validates its
# /openapi.json, then sends thousands of generated requests (valid and invalid) and fails if any
# answer is a 5xx. On demand, against the stack ./scripts/up.sh started:
#
#   ./scripts/fuzz-api.sh [BASE_URL]        # default http://127.0.0.1:8083 (inventory-sync)
#
# Credentials come from the environment or .env: ADMIN_TOKEN, and FUZZ_API_KEY (default: the
# first key of INVENTORY_API_KEYS). FUZZ_EXAMPLES sets examples per operation (default 300).
# It writes through the API (products, adjustments), so point it at a development instance.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DATASYNC_ROOT"

base="${1:-http://127.0.0.1:8083}"
admin="$(env_or_dotenv ADMIN_TOKEN "")"
[[ -n "$admin" ]] || die "ADMIN_TOKEN is not set (environment or .env)"
key="${FUZZ_API_KEY:-}"
if [[ -z "$key" ]]; then
    keys="$(env_or_dotenv INVENTORY_API_KEYS "")"
    key="${keys%%,*}"
    key="${key#*:}"
fi

venv="${DATASYNC_CACHE:-${HOME:-/tmp}/.cache/datasync}/fuzz-venv"
if [[ ! -x "$venv/bin/st" ]]; then
    python3 -m venv "$venv" || die "python3 -m venv failed (install python3-venv)"
    "$venv/bin/pip" install -q "schemathesis==4.32.5" "openapi-spec-validator==0.7.2" || die "pip install failed"
fi

spec="$(mktemp)"
trap 'rm -f "$spec"' EXIT
curl -fsS "$base/openapi.json" -o "$spec" || die "cannot fetch $base/openapi.json (is the service running?)"
"$venv/bin/openapi-spec-validator" "$spec"
"$venv/bin/st" run "$base/openapi.json" \
    --checks not_a_server_error \
    --max-examples "${FUZZ_EXAMPLES:-300}" \
    -H "Authorization: Bearer $admin" \
    ${key:+-H "X-API-Key: $key"}
