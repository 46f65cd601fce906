#!/usr/bin/env bash
# Python virtualenv for the integration tests, at $POWEHI_CACHE/venv (outside the
# checkout, reused across runs). Reinstalls tests/requirements.txt only when that file
# changed (hash stamp), so repeated `make test` runs cost nothing here.
#
#   deploy/local/python-env.sh        then use $POWEHI_CACHE/venv/bin/python
#
# Environment: POWEHI_CACHE (default /var/cache/powehi), POWEHI_PYTHON (default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${POWEHI_CACHE:-/var/cache/powehi}
VENV=$CACHE/venv
REQ=$ROOT/tests/requirements.txt
STAMP=$VENV/.requirements.sha256
PYTHON=${POWEHI_PYTHON:-python3}

log() { echo "python-env: $*" >&2; }

mkdir -p "$CACHE/run"
# Two concurrent runs must not pip-install into the same venv at once.
exec 9>"$CACHE/run/python-env.lock"
flock 9

want=$( (sha256sum "$REQ" | cut -d' ' -f1; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(<"$STAMP") == "$want" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
    exit 0
fi

# A venv whose interpreter is gone (or another Python) is rebuilt from scratch.
if [[ -e $VENV ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
    rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if [[ $(id -u) -ne 0 ]]; then
            log "$PYTHON cannot create a venv; install python3-venv and retry"
            exit 1
        fi
        log "installing python3-venv with apt-get"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    fi
    "$PYTHON" -m venv "$VENV"
fi

log "installing $REQ into $VENV"
rm -f "$STAMP"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
echo "$want" >"$STAMP"
