#!/usr/bin/env bash
# Stop the local Kafka broker and ClickHouse server (idempotent; data is kept under
# $POWEHI_CACHE). Both stop even if one of them fails to.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

rc=0
"$HERE/kafka.sh" stop || rc=1
"$HERE/clickhouse.sh" stop || rc=1
exit "$rc"
