"""Fixtures of the end-to-end tests: the real binaries against a real Kafka broker and a real
ClickHouse server. Helpers (post, event, ch_query, wait_until, …) are in e2e_support.py.

Each test owns what it touches: a raw topic, a database, a consumer group and a data source
with random names (`names`), processes on free ports (`start_gateway`, `start_worker`) that
are killed at teardown and whose log tails are printed when the test fails. A passing test
drops its database and topic; a failing one keeps them and prints their names.

Kafka and ClickHouse must already run (`deploy/local/kafka.sh start`,
`deploy/local/clickhouse.sh start`); otherwise the tests fail saying so. Addresses come from
POWEHI_KAFKA_BROKERS / POWEHI_CLICKHOUSE_URL (default 127.0.0.1:9092 / http://127.0.0.1:8123),
the binaries from ${CARGO_TARGET_DIR:-/var/cache/powehi/target}/release.

Run: /var/cache/powehi/venv/bin/python -m pytest tests/e2e -x -q
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser_support import Browser, browser_modules
from e2e_support import (
    CLICKHOUSE_SCRIPT,
    CLICKHOUSE_URL,
    GATEWAY_BIN,
    KAFKA_BROKERS,
    LOADGEN_BIN,
    KAFKA_SCRIPT,
    START_TIMEOUT_S,
    TARGET_DIR,
    VIEW_SCHEMA,
    WORKER_BIN,
    Creds,
    KafkaException,
    Proc,
    ServiceControl,
    Store,
    ch_exec,
    ch_scalar,
    child_env,
    data_source,
    free_port,
    group_members_partitions,
    kafka_admin,
    topic_partitions,
    wait_until,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report; on failure, append every process's log tail to it."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if report.failed:
        for proc in getattr(item, "powehi_procs", []):
            report.sections.append((f"{proc.name} log tail ({proc.log_path})", proc.tail()))
        names = getattr(item, "powehi_names", None)
        if names is not None:
            report.sections.append((
                "kept for inspection",
                f"topics {names.topic} {names.config_topic}, database {names.database}, group {names.group}",
            ))


@pytest.fixture(scope="session")
def binaries() -> None:
    for path in (GATEWAY_BIN, WORKER_BIN, LOADGEN_BIN):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: build it with `cargo build --release` (CARGO_TARGET_DIR={TARGET_DIR})")


@pytest.fixture(scope="session")
def services(binaries) -> None:
    """Kafka and ClickHouse must already be running."""
    try:
        version = ch_scalar("SELECT version()")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"ClickHouse is not reachable at {CLICKHOUSE_URL} ({exc}); start it: deploy/local/clickhouse.sh start"
        )
    try:
        kafka_admin().list_topics(timeout=10)
    except KafkaException as exc:
        pytest.fail(f"Kafka is not reachable at {KAFKA_BROKERS} ({exc}); start it: deploy/local/kafka.sh start")
    print(f"ClickHouse {version} at {CLICKHOUSE_URL}, Kafka at {KAFKA_BROKERS}")


@dataclass
class Names:
    """What a test owns: its raw topic, database, consumer group and data source."""

    hex: str
    topic: str
    database: str
    group: str
    client_id: str
    write_key: str

    @property
    def config_topic(self) -> str:
        """The test's own config log, so data sources and schemas never leak between tests."""
        return f"powehi.test.{self.hex}.config"

    @property
    def creds(self) -> Creds:
        return Creds(self.client_id, self.write_key)


@pytest.fixture
def names(request, services) -> Names:
    h = uuid.uuid4().hex[:12]
    n = Names(
        hex=h,
        topic=f"powehi.test.{h}.raw",
        database=f"powehi_test_{h}",
        group=f"powehi-test-{h}",
        client_id=f"e2e-{h}",
        write_key=f"key-{uuid.uuid4().hex}",
    )
    request.node.powehi_names = n
    yield n
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.passed:
        return  # kept for inspection: the names are in the failure report
    try:
        ch_exec(f"DROP DATABASE IF EXISTS {n.database}")
    except Exception:  # noqa: BLE001 - best effort
        pass
    try:
        for fut in kafka_admin().delete_topics([n.topic, n.config_topic], operation_timeout=10).values():
            fut.result(timeout=15)
    except Exception:  # noqa: BLE001 - best effort (the topic may not exist)
        pass


@pytest.fixture
def store(names) -> Store:
    return Store(names.database)


def default_bootstrap(names: Names) -> dict:
    return {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": [VIEW_SCHEMA]}


@pytest.fixture
def _procs(request, names):  # after `names`: processes stop before the test's data is dropped
    procs: list[Proc] = []
    request.node.powehi_procs = procs
    yield procs
    for proc in procs:
        if proc.alive():
            proc.popen.kill()
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        proc.http.close()


_ALL_POPENS: list[subprocess.Popen] = []


@atexit.register
def _kill_leftovers() -> None:
    """Last resort when pytest exits without running a teardown."""
    for popen in _ALL_POPENS:
        if popen.poll() is None:
            popen.kill()


def _spawn(procs: list, log_dir: Path, name: str, binary: Path, env: dict, addr: str) -> Proc:
    index = sum(1 for p in procs if p.name.split("-")[0] == name)
    label = f"{name}-{index}" if index else name
    log_path = log_dir / f"{label}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [str(binary)],
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Same process group as pytest: a Ctrl-C or `timeout` that ends pytest before its
            # teardown ends the processes too.
        )
    _ALL_POPENS.append(popen)
    proc = Proc(name=label, popen=popen, log_path=log_path, addr=addr, env=env)
    procs.append(proc)
    return proc


@pytest.fixture
def start_gateway(_procs, names, tmp_path):
    """start_gateway(bootstrap=None, wait_ready=True, **POWEHI_env) -> Proc.

    The bootstrap defaults to the test's data source and the schema `view`; `proc.creds`
    are the first data source's id and first write key.
    """

    def start(*, bootstrap: dict | None = None, wait_ready: bool = True, **env) -> Proc:
        bootstrap = bootstrap or default_bootstrap(names)
        boot_path = tmp_path / f"bootstrap-{uuid.uuid4().hex[:6]}.json"
        boot_path.write_text(json.dumps(bootstrap))
        addr = f"127.0.0.1:{free_port()}"
        full_env = {
            "POWEHI_HTTP_ADDR": addr,
            "POWEHI_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
            "POWEHI_KAFKA_BROKERS": KAFKA_BROKERS,
            "POWEHI_RAW_TOPIC": names.topic,
            "POWEHI_CONFIG_TOPIC": names.config_topic,
            "POWEHI_CLICKHOUSE_URL": CLICKHOUSE_URL,
            "POWEHI_CLICKHOUSE_DATABASE": names.database,
            "POWEHI_BOOTSTRAP": str(boot_path),
            "POWEHI_LOG": "info",
            **env,
        }
        proc = _spawn(_procs, tmp_path, "gateway", GATEWAY_BIN, full_env, addr)
        first = bootstrap["dataSources"][0]
        proc.creds = Creds(first["id"], first["writeKeys"][0])
        if wait_ready:
            proc.wait_ready()
        return proc

    return start


@pytest.fixture
def start_worker(_procs, names, tmp_path):
    """start_worker(wait="assigned"|"ready"|None, **POWEHI_env) -> Proc.

    "assigned" (default) waits for /readyz 200 and until the broker shows the group stable
    with every partition of the topic owned, so the test's traffic is consumed as it arrives
    (the worker's own gauge is checked by the tests about it). Start a gateway first: it
    creates the topic.
    """

    def start(*, wait: str | None = "assigned", **env) -> Proc:
        addr = f"127.0.0.1:{free_port()}"
        full_env = {
            "POWEHI_KAFKA_BROKERS": KAFKA_BROKERS,
            "POWEHI_RAW_TOPIC": names.topic,
            "POWEHI_CONFIG_TOPIC": names.config_topic,
            "POWEHI_CONSUMER_GROUP": names.group,
            "POWEHI_CLICKHOUSE_URL": CLICKHOUSE_URL,
            "POWEHI_CLICKHOUSE_DATABASE": names.database,
            "POWEHI_WORKER_HTTP_ADDR": addr,
            # Static membership: every worker a test starts is a new member unless the
            # test passes the id of one it replaces (a restart under the same name).
            "POWEHI_WORKER_ID": f"{names.group}-w{sum(1 for p in _procs if p.name.startswith('worker'))}",
            "POWEHI_LOG": "info",
            **env,
        }
        proc = _spawn(_procs, tmp_path, "worker", WORKER_BIN, full_env, addr)
        if wait in ("ready", "assigned"):
            proc.wait_ready()
        if wait == "assigned":
            partitions = topic_partitions(names.topic)
            wait_until(
                lambda: sum(group_members_partitions(names.group)) == partitions,
                START_TIMEOUT_S,
                what=f"group {names.group} to own all {partitions} partitions",
            )
        return proc

    return start


@pytest.fixture
def pipeline(start_gateway, start_worker) -> tuple[Proc, Proc]:
    """A gateway (which creates the topic) and one worker that owns partitions."""
    gateway = start_gateway()
    worker = start_worker()
    return gateway, worker


@pytest.fixture
def slow_proxy(tmp_path):
    """slow_proxy(upstream, delay_ms, only_with=None) -> the port of a `powehi-loadgen slow-proxy`
    to `upstream` (host:port) that holds back what a client sends for delay_ms (only chunks
    containing `only_with`, if given). Stopped at teardown."""
    proxies: list[subprocess.Popen] = []

    def start(upstream: str, delay_ms: int, only_with: str | None = None) -> int:
        port = free_port()
        args = [str(LOADGEN_BIN), "slow-proxy", "--listen", f"127.0.0.1:{port}", "--upstream", upstream]
        args += ["--delay-ms", str(delay_ms)] + (["--only-with", only_with] if only_with else [])
        with open(tmp_path / f"slow-proxy-{port}.log", "wb") as log:
            popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        _ALL_POPENS.append(popen)
        proxies.append(popen)
        wait_until(lambda: _listening(port), START_TIMEOUT_S, what=f"slow-proxy on port {port}")
        return port

    yield start
    for popen in proxies:
        popen.kill()
        popen.wait(timeout=10)


@pytest.fixture
def slow_clickhouse(services, slow_proxy):
    """slow_clickhouse(delay_ms, only_with=None) -> the URL of a proxy to ClickHouse that holds
    back what a client sends for delay_ms (see slow_proxy)."""
    upstream = CLICKHOUSE_URL.split("://", 1)[1].split("/", 1)[0]

    def start(delay_ms: int, only_with: str | None = None) -> str:
        return f"http://127.0.0.1:{slow_proxy(upstream, delay_ms, only_with)}"

    return start


@pytest.fixture
def slow_kafka(services, slow_proxy):
    """slow_kafka(delay_ms) -> a bootstrap address whose traffic to the broker is held back
    delay_ms (see slow_proxy)."""
    upstream = KAFKA_BROKERS.split(",")[0]

    def start(delay_ms: int) -> str:
        return f"127.0.0.1:{slow_proxy(upstream, delay_ms)}"

    return start


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def kafka_control(services):
    """Stops the broker on demand; always starts it again at teardown (idempotent)."""
    ctl = ServiceControl(KAFKA_SCRIPT)
    yield ctl
    ctl.start()


@pytest.fixture
def clickhouse_control(services):
    """Stops ClickHouse on demand; always starts it again at teardown (idempotent)."""
    ctl = ServiceControl(CLICKHOUSE_SCRIPT)
    yield ctl
    ctl.start()


# The browser tests' chromium (test_browser.py, test_console.py): the node modules
# deploy/local/browser-env.sh installed, and one browser per test whose console and driver
# log are printed when the test fails.
@pytest.fixture(scope="module")
def modules():
    return browser_modules()


@pytest.fixture
def browser(request, modules, tmp_path):
    b = Browser(modules, tmp_path / "browser.log")
    yield b
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            print("browser console:", json.dumps(b.console(), indent=1)[-6000:])
        except AssertionError as exc:
            print(f"browser console unavailable: {exc}")
        print("driver log:", b.stderr())
    b.close()
