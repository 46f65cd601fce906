#!/usr/bin/env bash
# Start the local Kafka broker and ClickHouse server (idempotent: healthy ones are
# reused). Both start in parallel; exits non-zero if either fails to become ready.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

"$HERE/kafka.sh" start &
kafka=$!
"$HERE/clickhouse.sh" start &
clickhouse=$!

rc=0
wait "$kafka" || rc=1
wait "$clickhouse" || rc=1
exit "$rc"
