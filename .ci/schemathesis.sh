#!/usr/bin/env bash
# Runs schemathesis (pinned) against the release binary's own /openapi.json: every check, for
# SCHEMATHESIS_MAX_TIME seconds (default 180), failing on any failure it reports.
# Usage: .ci/schemathesis.sh [path/to/wagate]   (default: $WAGATE_RELEASE_BINARY, else target/release/wagate)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-180}"
# A fixed seed, so that a landing is judged on the same cases it was tested with; set
# SCHEMATHESIS_SEED to explore further (and fix what a new seed finds).
SEED="${SCHEMATHESIS_SEED:-20261129}"
BIN="${1:-${WAGATE_RELEASE_BINARY:-$PWD/target/release/wagate}}"
VENV="${SCHEMATHESIS_VENV:-$PWD/target/schemathesis-$SCHEMATHESIS_VERSION}"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

# A fresh data directory; WhatsApp pointed at a closed local port (no internet here): sessions of
# the default `whatsapp` engine fail to connect at once and go `reconnecting`.
WAGATE_LISTEN="127.0.0.1:$PORT" \
WAGATE_DATA_DIR="$WORK/data" \
WAGATE_WA_URL="ws://127.0.0.1:9/ws/chat" \
WAGATE_WA_VERSION="2.3000.1027934701" \
WAGATE_LOG="${WAGATE_LOG:-warn}" \
  "$BIN" serve >"$WORK/stdout" 2>"$WORK/stderr" &
PID=$!

# `serve` prints the bootstrap key alone on a line on its first start.
KEY=""
for _ in $(seq 1 300); do
  KEY="$(grep -E '^wag_[A-Za-z0-9]+$' "$WORK/stdout" | tail -n1 || true)"
  if [ -n "$KEY" ] && python3 -c "import urllib.request, sys; urllib.request.urlopen('$BASE/healthz', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$PID" 2>/dev/null || { echo "schemathesis: the gateway exited"; cat "$WORK/stdout" "$WORK/stderr"; exit 1; }
  sleep 0.1
done
[ -n "$KEY" ] || { echo "schemathesis: no bootstrap key printed"; cat "$WORK/stdout" "$WORK/stderr"; exit 1; }

# The event stream is excluded: its answer never ends by design (a client reads it for hours), so
# every call would end in the request timeout. The API tests cover it (crates/wagate/tests/api/events.rs).
echo "schemathesis: $SCHEMATHESIS_VERSION against $BASE/openapi.json, every check but three (see docs/TESTING.md), ${MAX_TIME}s"
status=0
# Every check but three, whose premise does not hold for this API (docs/TESTING.md):
#   not_a_server_error           replaced by our hook: 502 upstream_unavailable and 504 timeout are
#                                documented answers (CI has no WhatsApp to reach); any other 5xx fails
#   positive_data_acceptance     schema-valid but semantically unknown input is a documented 400
#                                (a pageToken this API never issued, a pairing code never requested)
#   ensure_resource_availability the sandbox routes answer 404 for a `whatsapp` session, by contract
# One worker: with two, hypothesis parses Python source in two threads at once, and this
# machine's Python 3.11.7 then fails with "SystemError: AST constructor recursion depth
# mismatch" (a CPython bug of 3.11 fixed in 3.11.8 and 3.12.2), a tool error that failed 2 of 4
# runs on 2026-11-29.
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/.ci" "$VENV/bin/schemathesis" --config-file "$PWD/.ci/schemathesis.toml" run "$BASE/openapi.json" \
  --checks all \
  --exclude-checks not_a_server_error,positive_data_acceptance,ensure_resource_availability \
  --header "Authorization: Bearer $KEY" \
  --exclude-path '/api/v1/events:stream' \
  --max-time "$MAX_TIME" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 40 \
  --no-color \
  --output-sanitize true || status=$?

# The gateway must still be healthy afterwards.
if ! python3 -c "import urllib.request; urllib.request.urlopen('$BASE/healthz', timeout=5)"; then
  echo "schemathesis: the gateway no longer answers /healthz"
  status=1
fi
if grep -q "panicked" "$WORK/stderr"; then
  echo "schemathesis: the gateway logged a panic:"
  grep -n "panicked" "$WORK/stderr" | head -20
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "schemathesis: FAILED (exit $status); last gateway log lines:"
  tail -n 40 "$WORK/stderr"
fi
exit "$status"
