# Powehi — the two commands of the README, and their parts.
#   make run    start Kafka and ClickHouse if absent, then one gateway and one worker
#   make test   the whole suite: unit tests, then end-to-end tests on the real services
#               (first installs the Debian packages they need when missing: deploy/local/tools.sh)
#   make bench  the full benchmark on this machine, written to BENCHMARKS.md (minutes)
#
# Builds and downloads live outside the checkout, in POWEHI_CACHE, so every
# checkout (and CI) reuses them.

POWEHI_CACHE ?= /var/cache/powehi
CARGO_TARGET_DIR ?= $(POWEHI_CACHE)/target
export POWEHI_CACHE CARGO_TARGET_DIR

PYTHON := $(POWEHI_CACHE)/venv/bin/python
PYTEST_ARGS ?=

.PHONY: build run test unit e2e tools infra-up infra-down python-env browser-env bench

# Prerequisites run in the order written (tools first: the others may need what it
# installs), and the unit tests never share the machine with the e2e tests.
.NOTPARALLEL:

build:
	cargo build --release --locked --bins

# Debian packages the build and the tests need (docker-compose, ClickHouse, Java, …):
# installs only what is missing (root; otherwise it says what to install).
tools:
	deploy/local/tools.sh

infra-up:
	deploy/local/up.sh

infra-down:
	deploy/local/down.sh

python-env:
	deploy/local/python-env.sh

# playwright-core for the browser tests, outside the checkout (never a browser download:
# they drive Debian's chromium, which `tools` installs).
browser-env:
	deploy/local/browser-env.sh >/dev/null

run: infra-up build
	deploy/local/run.sh

unit:
	cargo test --release --locked --workspace

e2e: tools infra-up build python-env browser-env
	$(PYTHON) -m pytest tests/e2e $(PYTEST_ARGS)

test: tools unit e2e

bench: infra-up build
	bench/run.sh
