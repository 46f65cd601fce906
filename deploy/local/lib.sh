# shellcheck shell=bash
# Process helpers shared by kafka.sh and clickhouse.sh (sourced, not run).
# The sourcing script sets SERVICE (log prefix) before sourcing; the start, stop
# and status helpers at the end also use its PID_FILE, running_pid and wait_ready.

log() { echo "$SERVICE: $*" >&2; }

# Only root can apt-get; on other machines say what is missing instead.
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        log "missing $*; install it (apt-get install $*) and retry"
        exit 1
    fi
    log "installing $* with apt-get"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# True if process $1 exists and is not a zombie (nobody may reap it at once).
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

cmdline() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# find_server PID_FILE IS_SERVER_FN MARK: our server's pid, from the pid file, or
# else the server process whose command line holds MARK (its config path): the
# pid file may be lost or stale, and stop must still work.
find_server() {
    local pid_file=$1 is_server=$2 mark=$3 pid dir
    if [[ -f $pid_file ]]; then
        pid=$(<"$pid_file")
        if "$is_server" "$pid"; then
            echo "$pid"
            return 0
        fi
    fi
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        if "$is_server" "$pid" && [[ "$(cmdline "$pid") " == *"$mark "* ]]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

# stop_process PID TIMEOUT: SIGTERM, then SIGKILL after TIMEOUT seconds; returns
# once the process is gone.
stop_process() {
    local pid=$1 timeout=$2
    log "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if alive "$pid"; then
        log "still running after ${timeout}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.1; done
    fi
}

# adopt_running PID ADDR: our server runs already; records its pid and waits
# until it is ready (the status to return from start).
adopt_running() {
    local pid=$1
    # shellcheck disable=SC2153 # PID_FILE is the sourcing script's
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid" || return 1
    log "already running (pid $pid) on $2"
}

# stop_server TIMEOUT [PORT...]: stops our server if it runs, then waits (5 s at
# most) for the PORTs to close: they can linger a moment after the process.
stop_server() {
    local timeout=$1 pid port until
    shift
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    stop_process "$pid" "$timeout"
    until=$((SECONDS + 5))
    for port in "$@"; do
        while ((SECONDS < until)) && port_open "$port"; do
            sleep 0.1
        done
    done
    rm -f "$PID_FILE"
    log "stopped"
}

# server_status PROBE ADDR NOUN [ANSWERING]: 0 when ours runs and PROBE answers (or
# a NOUN not started by us answers), 1 when ours runs without answering, 3 when
# nothing runs.
server_status() {
    local probe=$1 addr=$2 noun=$3 answering=${4:-} pid
    if pid=$(running_pid); then
        if "$probe"; then
            echo "$SERVICE: running (pid $pid) on $addr$answering"
            return 0
        fi
        echo "$SERVICE: process $pid alive but not answering on $addr"
        return 1
    fi
    if "$probe"; then
        echo "$SERVICE: a $noun not started by this script answers on $addr"
        return 0
    fi
    echo "$SERVICE: not running"
    return 3
}
