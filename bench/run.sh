#!/usr/bin/env bash
# The Powehi benchmark, in one go on one machine, against the local Kafka and
# ClickHouse (deploy/local/up.sh): gateway, worker and end-to-end freshness,
# each next to its baseline measured in the same run (trivial actix-web server,
# raw librdkafka producer, raw ClickHouse RowBinary insert), written to
# BENCHMARKS.md.
#
#   bench/run.sh                    full run (the sizes of issue 5; minutes)
#   bench/run.sh --smoke --out F    every measurement at a tiny volume (seconds),
#                                   to prove the harness works; not real figures
#
# It starts its own gateway and worker processes (release binaries of
# $CARGO_TARGET_DIR) on free ports, with topics, databases and consumer groups of
# its own, and removes all of them on exit. Sizes can be overridden with the
# BENCH_* variables below.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-${POWEHI_CACHE:-/var/cache/powehi}/target}/release
LOADGEN=$BIN/powehi-loadgen
KAFKA=${POWEHI_KAFKA_BROKERS:-127.0.0.1:9092}
CH=${POWEHI_CLICKHOUSE_URL:-http://127.0.0.1:8123}
CH=${CH%/}
export POWEHI_KAFKA_BROKERS=$KAFKA POWEHI_CLICKHOUSE_URL=$CH

MODE=full
OUT=$ROOT/BENCHMARKS.md
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) MODE=smoke ;;
        --out) OUT=$2; shift ;;
        --out=*) OUT=${1#--out=} ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "bench/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = smoke ]; then
    : "${BENCH_DURATION:=1}"          # seconds per HTTP / Kafka measurement
    : "${BENCH_WARMUP:=0}"
    : "${BENCH_REQUESTS:=20}"         # cap of requests per closed-loop HTTP run
    : "${BENCH_CONNECTIONS:=4}"
    : "${BENCH_MAX_CONNECTIONS:=4 8}"  # closed-loop max: the best of these
    : "${BENCH_KAFKA_RECORDS:=500}"   # raw producer: a count instead of a duration
    : "${BENCH_CH_ROWS:=500}"
    : "${BENCH_CH_BATCH:=250}"
    : "${BENCH_PRELOAD:=500}"         # records preloaded for the worker
    : "${BENCH_FRESH_RATE:=50}"
    : "${BENCH_FRESH_DURATION:=2}"
    : "${BENCH_MAX_OPEN_RATE:=100}"   # open-loop runs never go above this
    : "${BENCH_WORKER_TIMEOUT:=60}"
    : "${BENCH_STALL_SECONDS:=1}"     # Kafka paused under load
    : "${BENCH_SLOW_CLIENTS:=50}"      # connections dribbling their bodies…
    : "${BENCH_SLOW_CLIENT_SECONDS:=4}" # …for this long
    : "${BENCH_SLOW_INSERT_MS:=200}"  # every ClickHouse INSERT held back this long…
    : "${BENCH_SLOW_SECONDS:=3}"      # …for this long
    : "${BENCH_TAKEOVER_ROWS:=20000}" # rows already stored when a worker takes over
else
    : "${BENCH_DURATION:=20}"
    : "${BENCH_WARMUP:=3}"
    : "${BENCH_REQUESTS:=}"
    : "${BENCH_CONNECTIONS:=128}"      # open loop, freshness and the Kafka stall
    # Closed-loop max: each side's best of these. Every request holds its connection
    # until Kafka acknowledges it (linger plus a broker round trip, ~4 ms), so 128
    # connections cap the gateway near 128 / 4 ms whatever its CPU (Little's law);
    # more connections can cost a handler that answers at once (bench/PROFILING.md).
    : "${BENCH_MAX_CONNECTIONS:=128 512}"
    : "${BENCH_KAFKA_RECORDS:=}"
    : "${BENCH_CH_ROWS:=2000000}"
    : "${BENCH_CH_BATCH:=50000}"
    : "${BENCH_PRELOAD:=2000000}"
    : "${BENCH_FRESH_RATE:=}"          # empty: half of the gateway's max req/s
    : "${BENCH_FRESH_DURATION:=30}"
    : "${BENCH_MAX_OPEN_RATE:=1000000}"
    : "${BENCH_WORKER_TIMEOUT:=900}"
    # Under the broker's session timeout (9 s): a longer pause makes the KRaft
    # controller in the same process fence its own broker when both wake up.
    : "${BENCH_STALL_SECONDS:=6}"
    : "${BENCH_SLOW_CLIENTS:=1000}"
    : "${BENCH_SLOW_CLIENT_SECONDS:=15}"
    # Under ClickHouse's keep_alive_timeout (3 s), or pooled connections break.
    : "${BENCH_SLOW_INSERT_MS:=2000}"
    : "${BENCH_SLOW_SECONDS:=30}"
    : "${BENCH_TAKEOVER_ROWS:=20000000}"
fi
: "${BENCH_LOADGEN_THREADS:=1}"
: "${BENCH_KAFKA_WARMUP:=$([ "$MODE" = smoke ] && echo 1 || echo 15)}"  # seconds
: "${BENCH_OPEN_REPEATS:=3}"      # runs of the open loop at half of the gateway's max

for bin in ingest-gateway event-worker powehi-loadgen; do
    if [ ! -x "$BIN/$bin" ]; then
        echo "bench/run.sh: $BIN/$bin is missing: build with \`make build\`" >&2
        exit 1
    fi
done

# ------------------------------------------------------------------ names, cleanup
ID=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
CLIENT=bench-$ID
KEY=key-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
CONFIG_TOPIC=powehi.bench.$ID.config
RAW_LOAD=powehi.bench.$ID.raw           # the gateway under max load (no worker)
RAW_FRESH=powehi.bench.$ID.fresh        # gateway + worker for freshness
PRELOAD_TOPIC=powehi.bench.$ID.preload  # what the workers read
KAFKA_TOPIC=powehi.bench.$ID.kafka      # raw producer baseline
FLOOR_TOPIC=powehi.bench.$ID.floor      # trivial handler + Kafka acknowledgement
DB=powehi_bench_$ID
TOPICS="$CONFIG_TOPIC,$RAW_LOAD,$RAW_FRESH,$PRELOAD_TOPIC,$KAFKA_TOPIC,$FLOOR_TOPIC"
DATABASES="${DB}_fresh ${DB}_w1 ${DB}_w2 ${DB}_ch ${DB}_slow ${DB}_takeover ${DB}_restart"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/powehi-bench.XXXXXX")
PIDS=()
KAFKA_PAUSED=""  # the broker's pid while it is paused (cleanup resumes it)

log() { echo "bench: $*" >&2; }

ch() { curl -sS --fail-with-body "$CH/" --data-binary "$1"; }

# Rows a worker stored in DATABASE: every record becomes one, accepted or rejected.
stored_rows() { ch "SELECT (SELECT count() FROM $1.events) + (SELECT count() FROM $1.rejected_events)"; }

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$KAFKA_PAUSED" ] && kill -CONT "$KAFKA_PAUSED" 2>/dev/null
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    "$LOADGEN" topics --delete "$TOPICS" >/dev/null 2>&1 || log "could not delete topics $TOPICS"
    for db in $DATABASES; do ch "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; done
    if [ "$rc" -ne 0 ]; then
        log "failed (exit $rc); logs kept in $WORK"
        for f in "$WORK"/*.log; do
            [ -f "$f" ] || continue
            echo "----- $(basename "$f") (tail)" >&2
            tail -n 15 "$f" >&2
        done
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {  # PORT PID WHAT
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { log "$3 exited before listening"; return 1; }
        sleep 0.1
    done
    log "$3 not listening after 60 s (port $1)"
    return 1
}

wait_ready() {  # URL PID WHAT
    for _ in $(seq 600); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { log "$3 exited before becoming ready"; return 1; }
        sleep 0.1
    done
    log "$3 not ready after 60 s ($1)"
    return 1
}

cpu_ticks() {  # user + system CPU of a live process, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

peak_rss_kb() {  # VmHWM of a live process, in kB
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

now() { date +%s.%N; }

# Runs a loadgen measurement: its command goes into the report, its JSON line
# into $WORK/NAME.json, its human line to the terminal.
measure() {  # NAME ARGS...
    local name=$1; shift
    echo "powehi-loadgen --threads $BENCH_LOADGEN_THREADS $*" >>"$WORK/commands.txt"
    log "$name: powehi-loadgen $*"
    "$LOADGEN" --threads "$BENCH_LOADGEN_THREADS" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log" || {
        cat "$WORK/$name.log" >&2
        return 1
    }
    tail -n 1 "$WORK/$name.log" >&2
}

# A closed-loop max: NAME measured at each of BENCH_MAX_CONNECTIONS (as NAME_cN),
# the run with the most requests/s copied to NAME.json.
measure_max() {  # NAME ARGS...
    local name=$1 conns; shift
    for conns in $BENCH_MAX_CONNECTIONS; do
        measure "${name}_c$conns" "$@" --connections "$conns"
    done
    python3 - "$WORK" "$name" <<'EOF'
import json, shutil, sys
from pathlib import Path
work, name = Path(sys.argv[1]), sys.argv[2]
def rps(path):
    return json.loads(path.read_text().strip().splitlines()[-1])["requests_per_s"]
shutil.copy(max(work.glob(f"{name}_c*.json"), key=rps), work / f"{name}.json")
EOF
}

jget() {  # FILE KEY[.KEY...]
    python3 - "$@" <<'EOF'
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[key]
print(value)
EOF
}

# Open-loop rate: FRACTION of MAX, capped by BENCH_MAX_OPEN_RATE, at least 1.
rate_of() { awk -v f="$1" -v m="$2" -v cap="$BENCH_MAX_OPEN_RATE" 'BEGIN { r = f * m; if (r > cap) r = cap; if (r < 1) r = 1; printf "%.0f", r }'; }

start_gateway() {  # NAME RAW_TOPIC DATABASE -> sets GW_PID GW_URL GW_ADMIN
    local name=$1 port admin
    port=$(free_port); admin=$(free_port)
    echo "POWEHI_HTTP_ADDR=127.0.0.1:$port POWEHI_RAW_TOPIC=$2 POWEHI_CONFIG_TOPIC=$CONFIG_TOPIC POWEHI_BOOTSTRAP=bootstrap.json POWEHI_CLICKHOUSE_DATABASE=$3 ingest-gateway" >>"$WORK/commands.txt"
    POWEHI_HTTP_ADDR=127.0.0.1:$port POWEHI_ADMIN_ADDR=127.0.0.1:$admin \
        POWEHI_RAW_TOPIC=$2 POWEHI_CONFIG_TOPIC=$CONFIG_TOPIC \
        POWEHI_BOOTSTRAP=$WORK/bootstrap.json POWEHI_CLICKHOUSE_DATABASE=$3 \
        POWEHI_LOG=warn "$BIN/ingest-gateway" >"$WORK/$name.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    GW_URL=http://127.0.0.1:$port/powehi/smile
    GW_ADMIN=http://127.0.0.1:$admin
    wait_ready "http://127.0.0.1:$port/readyz" "$GW_PID" "$name"
}

# The worker's name in its group (static membership) is WORKER_ID if set, else NAME.
start_worker() {  # NAME RAW_TOPIC DATABASE GROUP [CLICKHOUSE_URL] -> sets W_PID W_URL
    local name=$1 port url=${5:-$CH} id=${WORKER_ID:-$1}
    port=$(free_port)
    echo "POWEHI_RAW_TOPIC=$2 POWEHI_CONFIG_TOPIC=$CONFIG_TOPIC POWEHI_CLICKHOUSE_DATABASE=$3 POWEHI_CONSUMER_GROUP=$4 POWEHI_WORKER_ID=$id${5:+ POWEHI_CLICKHOUSE_URL=$5} event-worker" >>"$WORK/commands.txt"
    POWEHI_CLICKHOUSE_URL=$url POWEHI_WORKER_HTTP_ADDR=127.0.0.1:$port POWEHI_RAW_TOPIC=$2 \
        POWEHI_CONFIG_TOPIC=$CONFIG_TOPIC POWEHI_CLICKHOUSE_DATABASE=$3 \
        POWEHI_CONSUMER_GROUP=$4 POWEHI_WORKER_ID=$id POWEHI_LOG=warn \
        "$BIN/event-worker" >"$WORK/$name.log" 2>&1 &
    W_PID=$!
    PIDS+=("$W_PID")
    W_URL=http://127.0.0.1:$port
    wait_ready "$W_URL/readyz" "$W_PID" "$name"
}

# Partitions a worker owns, from its metrics (0 when it does not answer).
assigned_partitions() {  # WORKER_URL
    curl -sS "$1/metrics" 2>/dev/null | awk '/^powehi_worker_assigned_partitions / { print $2; found = 1 } END { if (!found) print 0 }'
}

# Seconds a request takes, the median of COUNT runs.
median_seconds() {  # COUNT CURL_ARGS...
    local count=$1; shift
    for _ in $(seq "$count"); do
        curl -sS -o /dev/null --fail-with-body -w '%{time_total}\n' "$@"
    done | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

stop_started() {  # PIDS... (stops and forgets them)
    local pid keep=()
    for pid in "$@"; do stop_pid "$pid"; done
    for pid in "${PIDS[@]}"; do
        [[ " $* " == *" $pid "* ]] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

log "mode $MODE, run $ID, work dir $WORK"
"$LOADGEN" bootstrap --source "$CLIENT:$KEY" >"$WORK/bootstrap.json"
: >"$WORK/commands.txt"
REQ_CAP=()
[ -n "$BENCH_REQUESTS" ] && REQ_CAP=(--requests "$BENCH_REQUESTS")
HTTP_COMMON=(--client-id "$CLIENT" --token "$KEY" --duration "$BENCH_DURATION" --warmup "$BENCH_WARMUP")

# ------------------------------------------------------------------ 0. warm-up
# A broker just started runs its JIT-compiled paths only after a while: without
# this, the first measurements (the gateway's) paid for it. Not reported.
log "warming up the broker (raw producer, not reported)"
"$LOADGEN" --threads "$BENCH_LOADGEN_THREADS" kafka --topic "$KAFKA_TOPIC" --client-id "$CLIENT" \
    --duration "$BENCH_KAFKA_WARMUP" >/dev/null 2>"$WORK/kafka-warmup.log"

# ------------------------------------------------------------------ 1. HTTP ceiling
port=$(free_port)
echo "powehi-loadgen baseline-http --addr 127.0.0.1:$port" >>"$WORK/commands.txt"
"$LOADGEN" baseline-http --addr "127.0.0.1:$port" >"$WORK/baseline-http.log" 2>&1 &
BASE_PID=$!
PIDS+=("$BASE_PID")
wait_port "$port" "$BASE_PID" baseline-http
for batch in 1 10 100; do
    measure_max "baseline_b$batch" http --url "http://127.0.0.1:$port/powehi/smile" "${HTTP_COMMON[@]}" \
        --batch "$batch" "${REQ_CAP[@]}"
done
stop_started "$BASE_PID"

# ------------------------------------------------------------------ 2. gateway, max load
# Next to it, the floor of any gateway that answers once Kafka has the data: the
# trivial handler forwarding each body as one record and answering on its
# acknowledgement (same producer settings), measured the same way.
port=$(free_port)
echo "powehi-loadgen baseline-http --addr 127.0.0.1:$port --kafka-topic $FLOOR_TOPIC" >>"$WORK/commands.txt"
"$LOADGEN" baseline-http --addr "127.0.0.1:$port" --kafka-topic "$FLOOR_TOPIC" >"$WORK/floor-http.log" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_port "$port" "$FLOOR_PID" "baseline-http --kafka-topic"
FLOOR_URL=http://127.0.0.1:$port/powehi/smile
start_gateway gateway "$RAW_LOAD" "${DB}_fresh"
for batch in 1 10 100; do
    measure_max "gateway_b$batch" http --url "$GW_URL" "${HTTP_COMMON[@]}" \
        --batch "$batch" "${REQ_CAP[@]}"
done
measure_max floor_b1 http --url "$FLOOR_URL" "${HTTP_COMMON[@]}" --batch 1 "${REQ_CAP[@]}"
MAX_RPS=$(jget "$WORK/gateway_b1.json" requests_per_s)
# Half of max is a target: measured BENCH_OPEN_REPEATS times and reported as the
# median, because on a shared VM one stall of ~150 ms in a 20 s run decides a p99.
# The floor runs at the same rate, interleaved, so both meet the same machine.
rate=$(rate_of 0.5 "$MAX_RPS")
for attempt in $(seq "$BENCH_OPEN_REPEATS"); do
    measure "gateway_open50_$attempt" http --url "$GW_URL" "${HTTP_COMMON[@]}" \
        --batch 1 --connections "$BENCH_CONNECTIONS" --rate "$rate"
    measure "floor_open50_$attempt" http --url "$FLOOR_URL" "${HTTP_COMMON[@]}" \
        --batch 1 --connections "$BENCH_CONNECTIONS" --rate "$rate"
done
stop_started "$FLOOR_PID"
measure gateway_open80 http --url "$GW_URL" "${HTTP_COMMON[@]}" \
    --batch 1 --connections "$BENCH_CONNECTIONS" --rate "$(rate_of 0.8 "$MAX_RPS")"
echo "{\"gateway_peak_rss_kb\": $(peak_rss_kb "$GW_PID")}" >"$WORK/gateway_rss.json"
stop_started "$GW_PID"

# ------------------------------------------------------------------ 3. Kafka ceiling
if [ -n "$BENCH_KAFKA_RECORDS" ]; then
    measure kafka kafka --topic "$KAFKA_TOPIC" --client-id "$CLIENT" --preload "$BENCH_KAFKA_RECORDS"
else
    measure kafka kafka --topic "$KAFKA_TOPIC" --client-id "$CLIENT" --duration "$BENCH_DURATION"
fi

# ------------------------------------------------------------------ 4. ClickHouse ceiling
measure clickhouse clickhouse --database "${DB}_ch" --client-id "$CLIENT" \
    --rows "$BENCH_CH_ROWS" --batch "$BENCH_CH_BATCH" --drop

# ------------------------------------------------------------------ 5. worker, preloaded topic
measure preload kafka --topic "$PRELOAD_TOPIC" --client-id "$CLIENT" --preload "$BENCH_PRELOAD"
for n in 1 2; do
    db=${DB}_w$n
    log "worker x$n: $BENCH_PRELOAD records from $PRELOAD_TOPIC into $db"
    pids=()
    for i in $(seq "$n"); do
        start_worker "worker${n}_$i" "$PRELOAD_TOPIC" "$db" "powehi-bench-$ID-w$n"
        pids+=("$W_PID")
    done
    t_ready=$(now)
    t_first="" c_first=0 stored=0
    while :; do
        stored=$(stored_rows "$db")
        t=$(now)
        if [ "$stored" -gt 0 ] && [ -z "$t_first" ]; then t_first=$t c_first=$stored; fi
        [ "$stored" -ge "$BENCH_PRELOAD" ] && break
        if awk -v a="$t" -v b="$t_ready" -v m="$BENCH_WORKER_TIMEOUT" 'BEGIN { exit !(a - b > m) }'; then
            log "worker x$n: only $stored of $BENCH_PRELOAD rows after ${BENCH_WORKER_TIMEOUT}s"
            exit 1
        fi
        sleep 0.1
    done
    t_done=$(now)
    rss=0
    for pid in "${pids[@]}"; do r=$(peak_rss_kb "$pid"); [ "$r" -gt "$rss" ] && rss=$r; done
    stop_started "${pids[@]}"
    accepted=$(ch "SELECT count() FROM $db.events")
    rejected=$(ch "SELECT count() FROM $db.rejected_events")
    awk -v n="$n" -v total="$BENCH_PRELOAD" -v stored="$stored" -v acc="$accepted" -v rej="$rejected" \
        -v tr="$t_ready" -v tf="$t_first" -v cf="$c_first" -v td="$t_done" -v rss="$rss" 'BEGIN {
        from_ready = td - tr; rate = (from_ready > 0) ? total / from_ready : 0
        # Steady rate: from the first rows seen to the last, when enough came after the first poll.
        steady = (total - cf > total / 2 && td > tf) ? (total - cf) / (td - tf) : rate
        printf "{\"workers\": %d, \"records\": %d, \"stored\": %d, \"accepted\": %d, \"rejected\": %d, \"seconds_from_ready\": %.3f, \"events_per_s_from_ready\": %.1f, \"events_per_s\": %.1f, \"peak_rss_kb\": %d}\n",
            n, total, stored, acc, rej, from_ready, rate, steady, rss }' >"$WORK/worker$n.json"
    log "worker x$n: $(cat "$WORK/worker$n.json")"
    ch "DROP DATABASE IF EXISTS $db" >/dev/null
done

# ------------------------------------------------------------------ 6. freshness, end to end
start_gateway gateway_fresh "$RAW_FRESH" "${DB}_fresh"
GW_FRESH_PID=$GW_PID
start_worker worker_fresh "$RAW_FRESH" "${DB}_fresh" "powehi-bench-$ID-fresh"
W_FRESH_PID=$W_PID
# The pipeline's own max: single-event requests while a worker consumes them,
# all on this machine. Then the worker catches up before freshness is measured.
# Who spends the two cores meanwhile: CPU seconds of each server process.
CPU_PIDS=("$GW_FRESH_PID" "$W_FRESH_PID" "$("$ROOT/deploy/local/kafka.sh" pid)" "$("$ROOT/deploy/local/clickhouse.sh" pid || echo 0)")
CPU_BEFORE=(); for pid in "${CPU_PIDS[@]}"; do CPU_BEFORE+=("$(cpu_ticks "$pid")"); done
CPU_STARTED=$(now)
measure_max pipeline_b1 http --url "$GW_URL" "${HTTP_COMMON[@]}" --batch 1 "${REQ_CAP[@]}"
CPU_AFTER=(); for pid in "${CPU_PIDS[@]}"; do CPU_AFTER+=("$(cpu_ticks "$pid")"); done
awk -v tick="$(getconf CLK_TCK)" -v wall="$(awk -v a="$CPU_STARTED" -v b="$(now)" 'BEGIN { print b - a }')" \
    -v before="${CPU_BEFORE[*]}" -v after="${CPU_AFTER[*]}" 'BEGIN {
        split(before, b, " "); split(after, a, " "); split("gateway worker kafka clickhouse", n, " ")
        printf "{\"wall_s\": %.1f", wall
        for (i = 1; i <= 4; i++) printf ", \"%s_cpu_s\": %.1f", n[i], (a[i] - b[i]) / tick
        print "}" }' >"$WORK/pipeline_cpu.json"
pipeline_events=$(jget "$WORK/pipeline_b1.json" ok_requests)
for _ in $(seq "$((BENCH_WORKER_TIMEOUT * 10))"); do
    stored=$(stored_rows "${DB}_fresh")
    [ "$stored" -ge "$pipeline_events" ] && break
    sleep 0.1
done
# Freshness at half of the gateway's max (measured without a worker), then at
# half of the pipeline's.
FRESH_RATE=${BENCH_FRESH_RATE:-$(rate_of 0.5 "$MAX_RPS")}
PIPE_RATE=${BENCH_FRESH_RATE:-$(rate_of 0.5 "$(jget "$WORK/pipeline_b1.json" requests_per_s)")}
# The last run polls `events` instead of `event_log` (which reads FINAL, and on
# 18.16 merges the whole month's partition on every poll): what the pipeline
# delivers, beside what the exact view costs its reader.
for run in "freshness $FRESH_RATE event_log" "freshness_pipeline $PIPE_RATE event_log" \
    "freshness_pipeline_events $PIPE_RATE events"; do
    # shellcheck disable=SC2086  # split on purpose: NAME RATE TABLE
    set -- $run
    measure "$1" freshness --url "$GW_URL" --client-id "$CLIENT" --token "$KEY" \
        --rate "$2" --duration "$BENCH_FRESH_DURATION" --connections "$BENCH_CONNECTIONS" \
        --database "${DB}_fresh" --table "$3"
done
echo "{\"gateway_peak_rss_kb\": $(peak_rss_kb "$GW_FRESH_PID"), \"worker_peak_rss_kb\": $(peak_rss_kb "$W_FRESH_PID")}" >"$WORK/fresh_rss.json"
stop_started "$GW_FRESH_PID" "$W_FRESH_PID"

# ------------------------------------------------------------------ 7. memory while a dependency is slow
# The gateway at max load (batches of 100) while the broker is paused: requests
# wait for their acknowledgements, nothing piles up beyond them.
KAFKA_PID=$("$ROOT/deploy/local/kafka.sh" pid)
start_gateway gateway_stall "$RAW_LOAD" "${DB}_fresh"
(
    sleep 3
    kill -STOP "$KAFKA_PID"
    sleep "$BENCH_STALL_SECONDS"
    kill -CONT "$KAFKA_PID"
) &
STALLER=$!
KAFKA_PAUSED=$KAFKA_PID
echo "kill -STOP <kafka pid>; sleep $BENCH_STALL_SECONDS; kill -CONT <kafka pid>   # 3 s into the next run" >>"$WORK/commands.txt"
measure gateway_stall http --url "$GW_URL" --client-id "$CLIENT" --token "$KEY" \
    --duration $((BENCH_STALL_SECONDS + 8)) --warmup 0 --batch 100 --connections "$BENCH_CONNECTIONS" "${REQ_CAP[@]}"
wait "$STALLER"
KAFKA_PAUSED=""
echo "{\"stall_seconds\": $BENCH_STALL_SECONDS, \"gateway_peak_rss_kb\": $(peak_rss_kb "$GW_PID")}" >"$WORK/gateway_stall_rss.json"
stop_started "$GW_PID"

# Slow clients: connections that declare 1 MiB and dribble it a byte a second,
# while normal clients send at a fixed rate. The gateway allocates nothing for
# what is only declared and closes them at its body-read deadline (10 s).
start_gateway gateway_slow "$RAW_LOAD" "${DB}_fresh"
echo "bench/slow_clients.py ${GW_URL#http://} <client> <key> $BENCH_SLOW_CLIENTS $BENCH_SLOW_CLIENT_SECONDS   # beside the next run" >>"$WORK/commands.txt"
python3 "$ROOT/bench/slow_clients.py" "$(echo "${GW_URL#http://}" | cut -d/ -f1)" "$CLIENT" "$KEY" \
    "$BENCH_SLOW_CLIENTS" "$BENCH_SLOW_CLIENT_SECONDS" >"$WORK/slow_clients_run.json" &
SLOW_CLIENTS=$!
sleep 1
measure gateway_slow_clients http --url "$GW_URL" --client-id "$CLIENT" --token "$KEY" \
    --rate "$(rate_of 0.25 "$MAX_RPS")" --duration $((BENCH_SLOW_CLIENT_SECONDS - 2)) --warmup 0 \
    --connections "$BENCH_CONNECTIONS" "${REQ_CAP[@]}"
wait "$SLOW_CLIENTS"
python3 - "$WORK/slow_clients_run.json" "$(peak_rss_kb "$GW_PID")" >"$WORK/slow_clients.json" <<'EOF2'
import json, sys
run = json.load(open(sys.argv[1]))
run["gateway_peak_rss_kb"] = int(sys.argv[2])
print(json.dumps(run))
EOF2
stop_started "$GW_PID"

# A worker draining the preloaded topic while every INSERT is held back.
SLOW_PORT=$(free_port)
echo "powehi-loadgen slow-proxy --listen 127.0.0.1:$SLOW_PORT --upstream ${CH#*://} --delay-ms $BENCH_SLOW_INSERT_MS --only-with INSERT" >>"$WORK/commands.txt"
"$LOADGEN" slow-proxy --listen "127.0.0.1:$SLOW_PORT" --upstream "${CH#*://}" \
    --delay-ms "$BENCH_SLOW_INSERT_MS" --only-with INSERT >"$WORK/slow-proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_port "$SLOW_PORT" "$PROXY_PID" slow-proxy
start_worker worker_slow "$PRELOAD_TOPIC" "${DB}_slow" "powehi-bench-$ID-slow" "http://127.0.0.1:$SLOW_PORT"
log "worker with every INSERT held back ${BENCH_SLOW_INSERT_MS} ms, for ${BENCH_SLOW_SECONDS} s"
sleep "$BENCH_SLOW_SECONDS"
slow_rss=$(peak_rss_kb "$W_PID")
stop_started "$W_PID" "$PROXY_PID"
slow_stored=$(stored_rows "${DB}_slow")
echo "{\"insert_delay_ms\": $BENCH_SLOW_INSERT_MS, \"seconds\": $BENCH_SLOW_SECONDS, \"stored\": $slow_stored, \"worker_peak_rss_kb\": $slow_rss}" >"$WORK/worker_slow.json"
log "slow ClickHouse: $(cat "$WORK/worker_slow.json")"
ch "DROP DATABASE IF EXISTS ${DB}_slow" >/dev/null

# ------------------------------------------------------------------ 8. takeover, restart and reads at scale
# A database already holding BENCH_TAKEOVER_ROWS rows (the raw insert of section
# 4, spread over 12 partitions): what a worker asks on takeover (loadgen
# `takeover`, the worker's own calls, beside the unkeyed question of before),
# the profile rebuild, and an event-log page and a profile read through the
# admin API.
TK_DB=${DB}_takeover
log "takeover: $BENCH_TAKEOVER_ROWS rows into $TK_DB"
measure takeover_fill clickhouse --database "$TK_DB" --client-id "$CLIENT" --rows "$BENCH_TAKEOVER_ROWS" --batch 50000
measure takeover takeover --database "$TK_DB"
echo "POWEHI_CLICKHOUSE_DATABASE=$TK_DB event-worker rebuild-profiles" >>"$WORK/commands.txt"
t0=$(now)
POWEHI_CLICKHOUSE_DATABASE=$TK_DB POWEHI_WORKER_HTTP_ADDR=127.0.0.1:0 POWEHI_LOG=warn \
    "$BIN/event-worker" rebuild-profiles >"$WORK/rebuild.log" 2>&1
rebuild_s=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
top_profile=$(ch "SELECT profile_id FROM $TK_DB.profile_stats GROUP BY profile_id ORDER BY uniqExactMerge(events) DESC LIMIT 1")
start_gateway gateway_reads "$RAW_FRESH" "$TK_DB"
ADMIN_AUTH=(-H "Authorization: Bearer demo-admin-token")
echo "curl -w %{time_total} \$ADMIN/v1/datasources/$CLIENT/events?limit=100   # median of 5" >>"$WORK/commands.txt"
page_s=$(median_seconds 5 "${ADMIN_AUTH[@]}" "$GW_ADMIN/v1/datasources/$CLIENT/events?limit=100")
echo "curl -w %{time_total} \$ADMIN/v1/profiles/<the profile with most events>   # median of 5" >>"$WORK/commands.txt"
profile_s=$(median_seconds 5 "${ADMIN_AUTH[@]}" "$GW_ADMIN/v1/profiles/$top_profile")
profile_events=$(ch "SELECT uniqExactMerge(events) FROM $TK_DB.profile_stats WHERE profile_id = '$top_profile'")
stop_started "$GW_PID"
echo "{\"rows\": $BENCH_TAKEOVER_ROWS, \"rebuild_profiles_s\": $rebuild_s, \"event_log_page_s\": $page_s, \"profile_read_s\": $profile_s, \"profile_events\": $profile_events}" >"$WORK/reads.json"
log "reads at scale: $(cat "$WORK/reads.json")"
ch "DROP DATABASE IF EXISTS $TK_DB" >/dev/null

# Restart after kill -9: the time from the new process's start until it owns
# partitions again, under the same worker name (static membership) and, as the
# same-run baseline, under a new name (the group waits out the old session).
restart() {  # NAME WORKER_ID -> sets RESTART_S, seconds from start to partitions assigned
    local t_start
    t_start=$(now)
    WORKER_ID=$2 start_worker "$1" "$RAW_FRESH" "${DB}_restart" "powehi-bench-$ID-restart"
    while [ "$(assigned_partitions "$W_URL")" = 0 ]; do
        if awk -v a="$(now)" -v b="$t_start" 'BEGIN { exit !(a - b > 60) }'; then
            log "restart: $1 got no partitions in 60 s"; exit 1
        fi
        sleep 0.05
    done
    RESTART_S=$(awk -v a="$(now)" -v b="$t_start" 'BEGIN { printf "%.3f", a - b }')
}
WORKER_ID=bench-restart start_worker worker_restart0 "$RAW_FRESH" "${DB}_restart" "powehi-bench-$ID-restart"
while [ "$(assigned_partitions "$W_URL")" = 0 ]; do sleep 0.1; done
kill -9 "$W_PID"; echo "kill -9 <worker>; start it again as bench-restart, then kill -9 and start as bench-restart-new" >>"$WORK/commands.txt"
restart worker_restart1 bench-restart
same_s=$RESTART_S
kill -9 "$W_PID"
restart worker_restart2 bench-restart-new
new_s=$RESTART_S
stop_started "$W_PID"
echo "{\"same_name_s\": $same_s, \"new_name_s\": $new_s}" >"$WORK/restart.json"
log "restart after kill -9: $(cat "$WORK/restart.json")"
ch "DROP DATABASE IF EXISTS ${DB}_restart" >/dev/null

# ------------------------------------------------------------------ report
KAFKA_VERSION=$(sed -n 's/^KAFKA_VERSION=\([^ ]*\).*/\1/p' "$ROOT/deploy/local/kafka.sh" | head -n 1)
CH_VERSION=$(ch "SELECT version()")
python3 "$ROOT/bench/report.py" "$WORK" "$OUT" "$MODE" "$KAFKA_VERSION" "$CH_VERSION" "$(rustc --version 2>/dev/null || echo unknown)" \
    "$(uname -sr)" "$(nproc)" "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
    "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
log "report written to $OUT"
