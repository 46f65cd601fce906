# shellcheck shell=bash
# Process helpers shared by kafka.sh and clickhouse.sh (sourced, not run).
# The sourcing script sets SERVICE (log prefix) before sourcing.

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
