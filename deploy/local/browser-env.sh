#!/usr/bin/env bash
# Node modules of the browser tests (tests/e2e/browser: playwright-core, which drives
# Debian's /usr/bin/chromium; it never downloads a browser of its own), installed outside
# the checkout at $POWEHI_CACHE/node/browser-<hash of package-lock.json>/node_modules.
# A changed lock file gets a new directory, so an install is never stale; an existing
# complete one costs nothing. tests/e2e/test_browser.py computes the same directory.
#
#   deploy/local/browser-env.sh          install if missing, print the directory
#
# Needs node and npm (deploy/local/tools.sh installs them). Environment: POWEHI_CACHE
# (default /var/cache/powehi).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${POWEHI_CACHE:-/var/cache/powehi}
SRC=$ROOT/tests/e2e/browser
# playwright-core has no install script, but a browser download must never happen here.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log() { echo "browser-env: $*" >&2; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        log "$tool is missing: run deploy/local/tools.sh (or apt-get install nodejs npm)"
        exit 1
    fi
done

# playwright-core 1.65 needs Node.js 20 (Debian 12's own nodejs is 18).
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
    log "node $(node --version) is too old for playwright-core: Node.js 20 or later is needed"
    exit 1
fi

hash=$(sha256sum "$SRC/package-lock.json" | cut -c1-16)
DIR=$CACHE/node/browser-$hash
STAMP=$DIR/.installed

mkdir -p "$CACHE/run"
# Two concurrent runs must not npm-install into the same directory at once.
exec 9>"$CACHE/run/browser-env.lock"
flock 9

if [[ ! -f $STAMP ]]; then
    log "installing $SRC/package-lock.json into $DIR"
    rm -rf "$DIR"
    mkdir -p "$DIR"
    cp "$SRC/package.json" "$SRC/package-lock.json" "$DIR/"
    npm ci --prefix "$DIR" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
    touch "$STAMP"
fi
echo "$DIR"
