#!/usr/bin/env bash
# Local ClickHouse server (Debian's clickhouse-server, 18.16 on bookworm; no Docker)
# for `make run`, `make test` and CI.
#
#   deploy/local/clickhouse.sh {start|stop|status|restart}
#
# Runs as a plain background process (root is fine) with its own config, data and logs
# under $POWEHI_CACHE, so it never touches /etc/clickhouse-server or /var/lib/clickhouse.
#
# Environment:
#   POWEHI_CACHE                        cache root (default /var/cache/powehi)
#   POWEHI_CLICKHOUSE_HTTP_PORT         HTTP port on 127.0.0.1 (default 8123)
#   POWEHI_CLICKHOUSE_TCP_PORT          native port on 127.0.0.1 (default 9000)
#   POWEHI_CLICKHOUSE_START_TIMEOUT     seconds to wait for /ping (default 60)
#   POWEHI_CLICKHOUSE_STOP_TIMEOUT      seconds to wait after SIGTERM before SIGKILL (default 30)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POWEHI_CACHE:-/var/cache/powehi}
HTTP_PORT=${POWEHI_CLICKHOUSE_HTTP_PORT:-8123}
TCP_PORT=${POWEHI_CLICKHOUSE_TCP_PORT:-9000}
START_TIMEOUT=${POWEHI_CLICKHOUSE_START_TIMEOUT:-60}
STOP_TIMEOUT=${POWEHI_CLICKHOUSE_STOP_TIMEOUT:-30}

DATA_DIR=$CACHE/clickhouse-data
LOG_DIR=$CACHE/logs
RUN_DIR=$CACHE/run
CONF_DIR=$RUN_DIR/clickhouse
CONF=$CONF_DIR/config.xml
PID_FILE=$RUN_DIR/clickhouse.pid
LOG_FILE=$LOG_DIR/clickhouse-server.log
ERR_FILE=$LOG_DIR/clickhouse-server.err.log
OUT_FILE=$LOG_DIR/clickhouse.out

SERVICE=clickhouse
# shellcheck source=deploy/local/lib.sh
source "$HERE/lib.sh"

ensure_tools() {
    local pkgs=()
    command -v clickhouse-server >/dev/null || pkgs+=(clickhouse-server clickhouse-client)
    command -v curl >/dev/null || pkgs+=(curl)
    if ((${#pkgs[@]})); then apt_install "${pkgs[@]}"; fi
}

render_config() {
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$DATA_DIR"/{tmp,user_files,format_schemas}
    local f
    for f in config.xml users.xml; do
        sed -e "s|@DATA_DIR@|$DATA_DIR|g" \
            -e "s|@LOG_DIR@|$LOG_DIR|g" \
            -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
            -e "s|@TCP_PORT@|$TCP_PORT|g" \
            "$HERE/clickhouse/$f" >"$CONF_DIR/$f"
    done
}

# True if $1 is a live clickhouse-server started the way this script starts it
# (not a reused pid of something else).
is_server_pid() {
    [[ $1 =~ ^[0-9]+$ ]] && alive "$1" || return 1
    [[ $(cmdline "$1") == *'clickhouse-server --config-file='* ]]
}

# Our server (see find_server).
running_pid() {
    find_server "$PID_FILE" is_server_pid "--config-file=$CONF"
}

ping_ok() {
    [[ $(curl -fsS --max-time 3 "http://127.0.0.1:$HTTP_PORT/ping" 2>/dev/null) == "Ok." ]]
}

print_failure_help() {
    log "logs: $LOG_FILE, $ERR_FILE, $OUT_FILE (stdout/stderr)"
    local f
    for f in "$OUT_FILE" "$ERR_FILE"; do
        if [[ -f $f ]]; then
            echo "--- last lines of $f" >&2
            tail -n 20 "$f" >&2 || true
        fi
    done
}

wait_ready() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        # Liveness only: right after launch the pid is still the forking shell.
        if ! alive "$pid"; then
            log "server (pid $pid) exited during startup"
            print_failure_help
            return 1
        fi
        if ping_ok; then
            return 0
        fi
        sleep 0.2
    done
    log "server not ready after ${START_TIMEOUT}s"
    print_failure_help
    return 1
}

cmd_start() {
    local pid
    if pid=$(running_pid); then
        adopt_running "$pid" "127.0.0.1:$HTTP_PORT"
        return
    fi
    ensure_tools
    # A healthy server we did not start (e.g. the distribution's service): reuse it.
    if ping_ok; then
        log "a server not started by this script answers on 127.0.0.1:$HTTP_PORT; reusing it"
        return 0
    fi
    local port
    for port in "$HTTP_PORT" "$TCP_PORT"; do
        if port_open "$port"; then
            log "port $port is taken by something that is not a working ClickHouse server"
            return 1
        fi
    done
    render_config
    echo "=== $(date -u +%FT%TZ) starting clickhouse-server" >>"$OUT_FILE"
    # setsid+nohup: the server outlives this script and its terminal; stdin/stdout
    # detached so a caller reading our output (make, CI) is not held open by it;
    # fd 9 (the lock) closed so the server does not hold the lock forever.
    # cd: the server resolves relative paths and writes preprocessed configs there.
    (cd "$CONF_DIR" && exec setsid nohup clickhouse-server --config-file="$CONF" \
        </dev/null >>"$OUT_FILE" 2>&1 9>&-) &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "starting (pid $pid), waiting for http://127.0.0.1:$HTTP_PORT/ping"
    if wait_ready "$pid"; then
        log "ready on 127.0.0.1:$HTTP_PORT (http) and :$TCP_PORT (native) (logs: $LOG_FILE)"
        return 0
    fi
    return 1
}

cmd_stop() {
    stop_server "$STOP_TIMEOUT"
}

cmd_status() {
    server_status ping_ok "127.0.0.1:$HTTP_PORT" server
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
    # Serialize start/stop of the same cache (e.g. up.sh racing a test).
    if [[ $cmd != status && $cmd != pid ]]; then
        exec 9>"$RUN_DIR/clickhouse.lock"
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
