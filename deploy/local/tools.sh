#!/usr/bin/env bash
# The Debian packages `make test` needs: to build (a C toolchain for the bundled
# librdkafka, make), to run Kafka and ClickHouse locally (deploy/local/kafka.sh,
# deploy/local/clickhouse.sh), to build the tests' venv (python3-venv) and to run the
# end-to-end tests themselves (docker-compose for tests/e2e/test_compose.py, java for
# Kafka's DumpLogSegments, curl for bench/run.sh, and for tests/e2e/test_browser.py
# Debian's chromium, driven by playwright-core, which node and npm install and run:
# deploy/local/browser-env.sh; never a browser downloaded by a test tool).
# Idempotent: installs only what is missing, with apt-get, as root; anyone else is
# told what to install.
#
#   deploy/local/tools.sh           install what is missing
#   deploy/local/tools.sh --check   only list what is missing (exit 1 if anything is)
#
# Called by `make test` / `make e2e` (target `tools`) and by .ci/run on a fresh machine.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POWEHI_CACHE:-/var/cache/powehi}

SERVICE=tools
# shellcheck source=deploy/local/lib.sh
source "$HERE/lib.sh"

# "command package" pairs: the package is needed when the command is not on PATH.
# A command is checked rather than a package so that a tool installed another way
# (e.g. a JDK outside apt) counts as present.
REQUIRED=(
    "make make"
    "cc gcc"
    "c++ g++"
    "curl curl"
    "clickhouse-server clickhouse-server"
    "clickhouse-client clickhouse-client"
    "java openjdk-17-jre-headless"
    "mvn maven"
    "python3 python3"
    "docker-compose docker-compose"
    "chromium chromium"
    "node nodejs"
    "npm npm"
)

missing_packages() {
    local pair cmd pkg
    local -a pkgs=()
    for pair in "${REQUIRED[@]}"; do
        read -r cmd pkg <<<"$pair"
        command -v "$cmd" >/dev/null || pkgs+=("$pkg")
    done
    # Debian's python3 cannot create a venv (deploy/local/python-env.sh) without it.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        pkgs+=(python3-venv)
    fi
    if ((${#pkgs[@]})); then
        printf '%s\n' "${pkgs[@]}"
    fi
}

main() {
    local check=false
    case ${1:-} in
    "") ;;
    --check) check=true ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
    esac

    local -a missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if $check; then
        log "missing: ${missing[*]}"
        return 1
    fi

    # Two runs at once (two checkouts, CI and a developer) must not race for apt's lock.
    mkdir -p "$CACHE/run"
    exec 9>"$CACHE/run/tools.lock"
    flock 9
    # The other run may have installed them meanwhile.
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi

    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]})); then
        log "still missing after apt-get install: ${missing[*]}"
        return 1
    fi
}

main "$@"
