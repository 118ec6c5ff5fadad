#!/usr/bin/env bash
# The authenticated request path of a real gateway process, measured with wrk
# (docs/PERFORMANCE.md, "The authenticated request path").
#
#   bash crates/wagate-bench/scripts/auth-path.sh [BINARY] [DURATION]
#
# Starts BINARY (default: target/release/wagate, built by `cargo build --release --bin wagate`)
# on a fresh data directory with its default SQLite store, creates one sandbox session with the
# bootstrap key, and runs `wrk -t1 -c32 -d10s` against `GET /api/v1/sessions/{id}` with that
# key: every request is authenticated. wrk and the gateway share the machine's cores.
set -euo pipefail
BIN=${1:-target/release/wagate}
DURATION=${2:-10s}
PORT=${WAGATE_BENCH_PORT:-18080}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
BIN=$(realpath "$BIN")
DIR=$(mktemp -d)
WAGATE_LISTEN="127.0.0.1:$PORT" WAGATE_DATA_DIR="$DIR/data" "$BIN" serve >"$DIR/stdout" 2>"$DIR/stderr" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 200); do grep -q '^wag_' "$DIR/stdout" 2>/dev/null && curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY=$(grep '^wag_' "$DIR/stdout")
SESSION=$(curl -sf -X POST "localhost:$PORT/api/v1/sessions" -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' -d '{"name":"bench","engine":"sandbox"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
wrk -t1 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/sessions/$SESSION"
