#!/usr/bin/env bash
# One gateway and one worker in the foreground against the local Kafka and
# ClickHouse (started by `make run` before this). Ctrl-C stops both gracefully.
# Every POWEHI_* variable of the README can be set to override the demo defaults.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-${POWEHI_CACHE:-/var/cache/powehi}/target}/release

export POWEHI_BOOTSTRAP=${POWEHI_BOOTSTRAP:-$ROOT/deploy/demo/bootstrap.json}
export POWEHI_HTTP_ADDR=${POWEHI_HTTP_ADDR:-0.0.0.0:8080}
export POWEHI_WORKER_HTTP_ADDR=${POWEHI_WORKER_HTTP_ADDR:-127.0.0.1:9091}

"$BIN/ingest-gateway" &
gateway=$!
"$BIN/event-worker" &
worker=$!

stop() {
    kill -TERM "$gateway" "$worker" 2>/dev/null || true
    wait "$gateway" "$worker" 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "powehi: gateway on $POWEHI_HTTP_ADDR (POST /powehi/smile), worker probes on $POWEHI_WORKER_HTTP_ADDR; Ctrl-C stops" >&2
# Whichever ends first ends the session.
wait -n "$gateway" "$worker"
