#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, no Docker) for `make run`, `make test` and CI.
#
#   deploy/local/kafka.sh {start|stop|status|restart|pid}
#
# `pid` prints the broker's process id (the benchmark pauses it to show the gateway's
# memory stays bounded while Kafka stalls).
#
# Kafka has no Debian package: the broker's jars are resolved from Maven once into
# $POWEHI_CACHE/kafka-<version>/libs (outside the checkout) and run with plain java.
# Data survives stop/start (tests stop and start the broker to simulate an outage).
#
# Environment:
#   POWEHI_CACHE                   cache root (default /var/cache/powehi)
#   POWEHI_KAFKA_PORT              PLAINTEXT listener on 127.0.0.1 (default 9092)
#   POWEHI_KAFKA_CONTROLLER_PORT   KRaft controller listener (default 9093)
#   POWEHI_KAFKA_START_TIMEOUT     seconds to wait for readiness (default 90)
#   POWEHI_KAFKA_STOP_TIMEOUT      seconds to wait after SIGTERM before SIGKILL (default 30)
set -euo pipefail

KAFKA_VERSION=4.1.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POWEHI_CACHE:-/var/cache/powehi}
PORT=${POWEHI_KAFKA_PORT:-9092}
CONTROLLER_PORT=${POWEHI_KAFKA_CONTROLLER_PORT:-9093}
START_TIMEOUT=${POWEHI_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${POWEHI_KAFKA_STOP_TIMEOUT:-30}

KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
LIBS=$KAFKA_HOME/libs
LIBS_STAMP=$KAFKA_HOME/.libs-complete
DATA_DIR=$CACHE/kafka-data
LOG_DIR=$CACHE/logs
RUN_DIR=$CACHE/run
PID_FILE=$RUN_DIR/kafka.pid
PROPS=$RUN_DIR/kafka-server.properties
LOG4J=$RUN_DIR/kafka-log4j2.properties
CLIENT_PROPS=$RUN_DIR/kafka-client.properties
LOG_FILE=$LOG_DIR/kafka.log
OUT_FILE=$LOG_DIR/kafka.out

SERVICE=kafka
# shellcheck source=deploy/local/lib.sh
source "$HERE/lib.sh"

# Size of kafka.log before this start: what follows it belongs to this start.
START_LOG_OFFSET=0

ensure_tools() {
    local pkgs=()
    command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || pkgs+=(maven)
    if ((${#pkgs[@]})); then apt_install "${pkgs[@]}"; fi
}

# Resolve the broker's jars once. The stamp holds the pom's hash and is written last,
# so an interrupted download (or a changed pom) is redone from scratch.
ensure_libs() {
    local want
    want=$(sha256sum "$HERE/kafka/pom.xml" | cut -d' ' -f1)
    if [[ -f $LIBS_STAMP && $(<"$LIBS_STAMP") == "$want" && -d $LIBS ]]; then
        return 0
    fi
    ensure_tools
    log "resolving Kafka $KAFKA_VERSION jars into $LIBS (first run only)"
    mkdir -p "$KAFKA_HOME"
    rm -rf "$LIBS.tmp" "$LIBS_STAMP"
    local mvn_log=$LOG_DIR/kafka-mvn.log
    if ! mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$mvn_log" 2>&1; then
        tail -n 30 "$mvn_log" >&2
        log "dependency resolution failed (full output: $mvn_log)"
        exit 1
    fi
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    echo "$want" >"$LIBS_STAMP"
}

render_config() {
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$DATA_DIR"
    sed -e "s|@KAFKA_PORT@|$PORT|g" \
        -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$DATA_DIR|g" \
        "$HERE/kafka/server.properties" >"$PROPS"
    # Copied so a running broker never depends on the checkout it was started from.
    cp "$HERE/kafka/log4j2.properties" "$LOG4J"
}

# Short client timeouts: the admin client otherwise retries for 60 s when the
# broker is down, which would make readiness polling useless.
write_client_props() {
    printf '%s\n' request.timeout.ms=5000 default.api.timeout.ms=8000 >"$CLIENT_PROPS"
}

# Kafka's CLI classes; log4j at ERROR on the console keeps their output clean.
kafka_tool() {
    java -Xmx256m -Dlog4j2.level=ERROR -Dlog4j2.statusLoggerLevel=OFF -cp "$LIBS/*" "$@"
}

# A broker refuses to start on an unformatted log dir; format only once.
ensure_formatted() {
    if [[ -f $DATA_DIR/meta.properties ]]; then
        return 0
    fi
    local cluster_id
    cluster_id=$(kafka_tool kafka.tools.StorageTool random-uuid)
    log "formatting $DATA_DIR (cluster id $cluster_id)"
    kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" -g >/dev/null
}

# True if $1 is a live Kafka broker process (not a reused pid of something else).
is_kafka_pid() {
    [[ $1 =~ ^[0-9]+$ ]] && alive "$1" || return 1
    [[ $(cmdline "$1") == *' kafka.Kafka '* ]]
}

# The broker we run (see find_server).
running_pid() {
    find_server "$PID_FILE" is_kafka_pid " $PROPS"
}

# A real metadata round trip, not just an open port.
metadata_ok() {
    [[ -f $LIBS_STAMP ]] || return 1
    port_open "$PORT" || return 1
    timeout 30 java -Xmx256m -Dlog4j2.level=ERROR -Dlog4j2.statusLoggerLevel=OFF -cp "$LIBS/*" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PORT" \
        --command-config "$CLIENT_PROPS" --list >/dev/null 2>&1
}

print_failure_help() {
    log "logs: $LOG_FILE (broker), $OUT_FILE (JVM stdout/stderr)"
    if [[ -f $OUT_FILE ]]; then
        echo "--- last lines of $OUT_FILE" >&2
        tail -n 10 "$OUT_FILE" >&2 || true
    fi
    if [[ -f $LOG_FILE ]]; then
        # Errors of this start only, each with its exception message (not the stack).
        echo "--- ERROR/FATAL lines of this start in $LOG_FILE" >&2
        tail -c +"$((START_LOG_OFFSET + 1))" "$LOG_FILE" | grep -E -A2 ' (ERROR|FATAL) ' |
            grep -v -E '^[[:space:]]+at |^--$' | tail -n 20 >&2 || true
    fi
}

# Wait until the broker answers metadata; with a log offset, also require the
# "Kafka Server started" line written after that offset (this start, not an old one).
wait_ready() {
    local pid=$1 log_offset=${2:-} deadline=$((SECONDS + START_TIMEOUT)) started=
    [[ -n $log_offset ]] || started=yes
    while ((SECONDS < deadline)); do
        # Liveness only: right after launch the pid is still the forking shell.
        if ! alive "$pid"; then
            log "broker (pid $pid) exited during startup"
            print_failure_help
            return 1
        fi
        if [[ -z $started && -f $LOG_FILE ]]; then
            local size
            size=$(stat -c %s "$LOG_FILE")
            # A roll-over makes the file smaller than the offset: read it whole.
            ((size >= log_offset)) || log_offset=0
            # Process substitution, not a pipe: with pipefail, grep -q quitting early
            # would fail the pipeline through tail's SIGPIPE.
            if grep -q 'Kafka Server started' < <(tail -c +"$((log_offset + 1))" "$LOG_FILE"); then
                started=yes
            fi
        fi
        if [[ -n $started ]] && metadata_ok; then
            return 0
        fi
        sleep 0.5
    done
    log "broker not ready after ${START_TIMEOUT}s"
    print_failure_help
    return 1
}

cmd_start() {
    local pid
    if pid=$(running_pid); then
        adopt_running "$pid" "127.0.0.1:$PORT"
        return
    fi
    ensure_libs
    render_config
    # Something else answers on our port: reuse it if it is a working broker.
    if port_open "$PORT"; then
        if metadata_ok; then
            log "a broker not started by this script answers on 127.0.0.1:$PORT; reusing it"
            return 0
        fi
        log "port $PORT is taken by something that is not a working Kafka broker"
        return 1
    fi
    if port_open "$CONTROLLER_PORT"; then
        log "controller port $CONTROLLER_PORT is taken (set POWEHI_KAFKA_CONTROLLER_PORT)"
        return 1
    fi
    ensure_formatted

    [[ -f $LOG_FILE ]] && START_LOG_OFFSET=$(stat -c %s "$LOG_FILE")
    echo "=== $(date -u +%FT%TZ) starting Kafka $KAFKA_VERSION" >>"$OUT_FILE"
    # setsid+nohup: the broker outlives this script and its terminal; stdin/stdout
    # detached so a caller reading our output (make, CI) is not held open by it;
    # fd 9 (the lock) closed so the broker does not hold the lock forever.
    setsid nohup java -Xmx512m -Xms512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" \
        </dev/null >>"$OUT_FILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "starting (pid $pid), waiting for readiness on 127.0.0.1:$PORT"
    if wait_ready "$pid" "$START_LOG_OFFSET"; then
        log "ready on 127.0.0.1:$PORT (logs: $LOG_FILE)"
        return 0
    fi
    return 1
}

cmd_stop() {
    stop_server "$STOP_TIMEOUT" "$PORT" "$CONTROLLER_PORT"
}

cmd_status() {
    server_status metadata_ok "127.0.0.1:$PORT" broker ", answering metadata"
}

main() {
    local cmd=${1:-}
    case $cmd in
    start | stop | status | restart | pid) ;;
    *)
        echo "usage: $0 {start|stop|status|restart|pid}" >&2
        exit 2
        ;;
    esac
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    write_client_props
    # Serialize start/stop/restart of the same cache (e.g. up.sh racing a test).
    if [[ $cmd != status && $cmd != pid ]]; then
        exec 9>"$RUN_DIR/kafka.lock"
        flock 9
    fi
    case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    pid) running_pid ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    esac
}

main "$@"
