"""Helpers of the end-to-end tests (fixtures are in conftest.py).

- `wait_until`: bounded polling, the only way tests wait for something to happen;
- ClickHouse: `ch_exec`, `ch_query`, `ch_scalar`, `Store` (one test's database);
- Kafka: `kafka_admin`, `wait_group_caught_up` (nothing left to replay);
- metrics: `parse_metrics`, `metric_sum`;
- `Proc`: one started binary (log file, address, metrics, signals);
- requests: `post`, `event`, `assert_error`, `retry_after_seconds`, `EventStream`;
- `ServiceControl`: deploy/local/{kafka,clickhouse}.sh stop|start for the outage tests;
- exactly once counted by tag (events without itemId): `tick_bootstrap`, `TagStream`,
  `wait_tags_stored`, `assert_tags_exactly_once`, `assert_profile_counts_exact`,
  `readers_snapshot`; `Freezer` (SIGSTOP/SIGCONT), `clickhouse_server_pid`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

try:
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: F401 - KafkaException for conftest
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient
except ImportError as exc:  # pragma: no cover - environment problem, said clearly
    raise ImportError(
        "the e2e tests need confluent-kafka: "
        "/var/cache/powehi/venv/bin/pip install confluent-kafka"
    ) from exc

REPO = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/powehi/target"))
GATEWAY_BIN = TARGET_DIR / "release" / "ingest-gateway"
WORKER_BIN = TARGET_DIR / "release" / "event-worker"
LOADGEN_BIN = TARGET_DIR / "release" / "powehi-loadgen"
KAFKA_BROKERS = os.environ.get("POWEHI_KAFKA_BROKERS", "127.0.0.1:9092")
CLICKHOUSE_URL = os.environ.get("POWEHI_CLICKHOUSE_URL", "http://127.0.0.1:8123").rstrip("/")
KAFKA_SCRIPT = REPO / "deploy" / "local" / "kafka.sh"
CLICKHOUSE_SCRIPT = REPO / "deploy" / "local" / "clickhouse.sh"

START_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- polling


def wait_until(
    cond: Callable[[], Any],
    timeout: float,
    interval: float = 0.2,
    what: str = "",
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll `cond` until it returns something truthy (returned) or `timeout` seconds pass.

    Exceptions raised by `cond` count as "not yet" (a dependency may still be coming up);
    the last value or exception, and `describe()` if given, are reported if time runs out.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = cond()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported below
            last = exc
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:.0f}s waiting for {what or cond}: last {last!r}"
            raise AssertionError(f"{message}; {describe()}" if describe else message)
        time.sleep(interval)


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


_EPHEMERAL = _ephemeral_ports()


def free_port() -> int:
    """A port to give a process to listen on, outside the ephemeral range: a port the kernel
    handed out once (bind to 0) may meanwhile be the local end of some outgoing connection
    (librdkafka opens many), and the listener's bind then fails with EADDRINUSE."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, 65_000)
        if port in _EPHEMERAL:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port outside the ephemeral range after 200 tries")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- ClickHouse


class ClickHouseError(RuntimeError):
    pass


def ch_exec(sql: str, timeout: float = 30) -> str:
    """Run one statement over the HTTP interface; return the raw answer text."""
    resp = requests.post(
        CLICKHOUSE_URL + "/",
        params={"output_format_json_quote_64bit_integers": "0"},
        data=sql.encode(),
        timeout=timeout,
    )
    if resp.status_code != 200:
        raise ClickHouseError(f"{resp.status_code}: {resp.text.strip()[:500]} (query: {sql[:300]})")
    return resp.text


def ch_query(sql: str, fmt: str = "JSONEachRow") -> list:
    """Rows of a SELECT: dicts for JSONEachRow, lists of strings for TabSeparated."""
    text = ch_exec(f"{sql} FORMAT {fmt}")
    lines = [line for line in text.split("\n") if line]
    if fmt == "JSONEachRow":
        return [json.loads(line) for line in lines]
    return [line.split("\t") for line in lines]


def ch_scalar(sql: str) -> str:
    rows = ch_query(sql, fmt="TabSeparated")
    assert len(rows) == 1 and len(rows[0]) == 1, f"expected one value from {sql!r}, got {rows!r}"
    return rows[0][0]


def sql_str(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Store:
    """The test's ClickHouse database, as an analyst reads it."""

    def __init__(self, database: str):
        self.db = database

    def count(self, table: str, where: str = "1") -> int:
        return int(ch_scalar(f"SELECT count() FROM {self.db}.{table} WHERE {where}"))

    def rows(self, table: str, where: str = "1", columns: str = "*") -> list[dict]:
        return ch_query(f"SELECT {columns} FROM {self.db}.{table} WHERE {where}")

    def id_counts(self, table: str = "events", where: str = "1") -> Counter:
        rows = ch_query(
            f"SELECT event_id, count() FROM {self.db}.{table} WHERE {where} GROUP BY event_id",
            fmt="TabSeparated",
        )
        return Counter({event_id: int(n) for event_id, n in rows})

    def wait_for_ids(self, ids: set[str], timeout: float, table: str = "events") -> None:
        """Wait until every id in `ids` has a row in `table`."""

        missing = set(ids)

        def all_there() -> bool:
            nonlocal missing
            missing = ids - set(self.id_counts(table))
            return not missing

        wait_until(
            all_there,
            timeout,
            interval=0.5,
            what=f"{len(ids)} event ids in {self.db}.{table}",
            describe=lambda: f"{len(missing)} of {len(ids)} still missing, e.g. {sorted(missing)[:3]}",
        )

    def assert_each_stored_once(self, acked: set[str]) -> None:
        """Every acknowledged id exactly once, and no event id twice anywhere."""
        counts = self.id_counts()
        missing = acked - set(counts)
        dups = {i: n for i, n in counts.items() if n > 1}
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
        assert not dups, f"{len(dups)} events stored more than once, e.g. {sorted(dups.items())[:5]}"
        total = ch_query(f"SELECT count() AS n, uniqExact(event_id) AS u FROM {self.db}.events")[0]
        assert int(total["n"]) == int(total["u"]), f"count() != uniqExact(event_id): {total}"


# --------------------------------------------------------------------------- Kafka


@functools.lru_cache(maxsize=1)
def kafka_admin() -> AdminClient:
    """One client for the session: its futures resolve only while the client is alive."""
    return AdminClient({"bootstrap.servers": KAFKA_BROKERS, "socket.timeout.ms": 5000, "log_level": 2})


def topic_partitions(topic: str) -> int:
    md = kafka_admin().list_topics(topic, timeout=10)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        raise AssertionError(f"topic {topic} not found: {meta and meta.error}")
    return len(meta.partitions)


def group_members_partitions(group: str) -> list[int]:
    """Partitions owned by each member of a consumer group, as the broker sees it ([] while
    the group is rebalancing or empty)."""
    admin = kafka_admin()  # referenced until the answer is in: a destroyed client's future may never complete
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    if desc.state != ConsumerGroupState.STABLE:
        return []
    return [len(m.assignment.topic_partitions) for m in desc.members]


def _group_consumer(group: str) -> Consumer:
    return Consumer({"bootstrap.servers": KAFKA_BROKERS, "group.id": group, "enable.auto.commit": False, "log_level": 2})


def group_lag(group: str, topic: str, consumer: Consumer | None = None) -> list[tuple[int, int, int]]:
    """(partition, committed, end) of every partition of `topic` the group has not
    committed to its end. `consumer` (of that group) is reused when given."""
    own = consumer is None
    consumer = consumer or _group_consumer(group)
    try:
        parts = [TopicPartition(topic, p) for p in range(topic_partitions(topic))]
        behind = []
        for tp in consumer.committed(parts, timeout=10):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            if high > 0 and tp.offset < high:
                behind.append((tp.partition, tp.offset, high))
        return behind
    finally:
        if own:
            consumer.close()


def wait_group_caught_up(group: str, topic: str, timeout: float = 90) -> None:
    """Wait until the group's committed offset is the end of every partition of `topic`.

    The worker commits only after the rows are in ClickHouse, so after this nothing is
    left to replay: a duplicate cannot show up later.
    """
    consumer = _group_consumer(group)
    try:
        behind: list = []

        def caught_up() -> bool:
            nonlocal behind
            behind = group_lag(group, topic, consumer)
            return not behind

        wait_until(
            caught_up,
            timeout,
            interval=0.5,
            what=f"group {group} to commit the end of {topic}",
            describe=lambda: f"(partition, committed, end) behind: {behind}",
        )
    finally:
        consumer.close()


def assert_stored_exactly_once(
    store: Store, names, acked: set[str], *, ids_timeout: float = 120, replay_timeout: float = 90
) -> None:
    """Every acknowledged event is in `events` exactly once and nothing else is: waits for the
    ids, then until the group has nothing left to replay (a replay must not add a copy)."""
    store.wait_for_ids(acked, timeout=ids_timeout)
    wait_group_caught_up(names.group, names.topic, timeout=replay_timeout)
    store.assert_each_stored_once(acked)
    assert store.count("events") == len(acked)


# --------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            samples.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def metric_sum(samples: list, name: str, **labels: str | Callable[[str], bool]) -> float | None:
    """Sum of the samples of `name` whose labels match (a value or a predicate); None if none."""

    def matches(sample_labels: dict) -> bool:
        for key, want in labels.items():
            have = sample_labels.get(key)
            if have is None or not (want(have) if callable(want) else have == want):
                return False
        return True

    values = [v for n, lab, v in samples if n == name and matches(lab)]
    return sum(values) if values else None


# --------------------------------------------------------------------------- processes


@dataclass
class Creds:
    client_id: str
    token: str


@dataclass
class Proc:
    """One started binary. `addr` is the listener its /healthz, /readyz, /metrics are on."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    addr: str
    env: dict
    creds: Creds | None = None
    http: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return f"http://{self.addr}{path}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def get(self, path: str, timeout: float = 5) -> requests.Response:
        return self.http.get(self.url(path), timeout=timeout)

    def metrics(self) -> list:
        resp = self.get("/metrics")
        assert resp.status_code == 200, f"{self.name} /metrics answered {resp.status_code}"
        return parse_metrics(resp.text)

    def metric(self, name: str, **labels) -> float | None:
        return metric_sum(self.metrics(), name, **labels)

    def terminate(self) -> None:
        self.popen.send_signal(signal.SIGTERM)

    def kill9(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running {timeout:.0f}s after the signal") from None

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        def ready() -> bool:
            if not self.alive():
                raise ProcessExited(self)
            return self.get("/readyz", timeout=2).status_code == 200

        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except ProcessExited:
                raise AssertionError(
                    f"{self.name} exited with {self.popen.returncode} during start-up; log tail:\n{self.tail()}"
                ) from None
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name} not ready (/readyz) after {timeout:.0f}s; log tail:\n{self.tail()}")
            time.sleep(0.1)

    def assigned_partitions(self) -> float:
        value = self.metric("powehi_worker_assigned_partitions")
        assert value is not None, f"{self.name} /metrics has no powehi_worker_assigned_partitions"
        return value


class ProcessExited(Exception):
    def __init__(self, proc: Proc):
        super().__init__(f"{proc.name} exited with {proc.popen.returncode}")


def child_env(overrides: dict) -> dict:
    """The test runner's environment without any POWEHI_* variable, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWEHI_")}
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    return env


def worker_command(database: str, *args: str, timeout: float = 120) -> None:
    """A one-off `event-worker <args>` (`migrate`, `rebuild-profiles`) against `database`."""
    env = child_env({
        "POWEHI_CLICKHOUSE_URL": CLICKHOUSE_URL,
        "POWEHI_CLICKHOUSE_DATABASE": database,
        "POWEHI_WORKER_HTTP_ADDR": "127.0.0.1:0",
        "POWEHI_LOG": "info",
    })
    res = subprocess.run([str(WORKER_BIN), *args], env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert res.returncode == 0, f"event-worker {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"


# --------------------------------------------------------------------------- requests


def data_source(ds_id: str, keys: list[str], **extra) -> dict:
    """A data source of the bootstrap file."""
    return {"id": ds_id, "name": ds_id, "writeKeys": keys, "enabled": True, "maxEventsPerSecond": None, **extra}


VIEW_SCHEMA = {"eventType": "view", "properties": []}

_DEFAULT = object()


def post(
    gateway: Proc,
    body: Any,
    *,
    creds: Creds | None | object = _DEFAULT,
    path: str = "/powehi/smile",
    headers: dict | None = None,
    content_type: str | None = "application/json",
    session: requests.Session | None = None,
    timeout: float = 30,
) -> requests.Response:
    """POST an ingest request. `body`: dict/list (sent as JSON), str/bytes or an iterator (sent raw).

    `creds` defaults to the gateway's first data source; None sends no credential header.
    """
    creds = gateway.creds if creds is _DEFAULT else creds
    h: dict[str, str] = {}
    if creds is not None:
        h["X-Client-ID"] = creds.client_id
        h["X-Client-Access-Token"] = creds.token
    if content_type is not None:
        h["Content-Type"] = content_type
    h.update(headers or {})
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    return (session or gateway.http).post(gateway.url(path), data=data, headers=h, timeout=timeout)


def event(scope: str, /, *, drop: tuple = (), **fields) -> dict:
    """A valid event of the registered type `view`, with a unique itemId; `drop` removes fields."""
    ev = {
        "eventType": "view",
        "sessionId": f"s-{uuid.uuid4().hex[:8]}",
        "properties": {},
        "scope": scope,
        "timeStamp": utc_now_iso(),
        "source": {"itemId": "_", "itemType": "_"},
        "target": {"itemId": "_", "itemType": "_"},
        "itemId": f"ev-{uuid.uuid4().hex}",
    }
    ev.update(fields)
    for key in drop:
        ev.pop(key, None)
    return ev


def assert_error(resp: requests.Response, status: int, code: str) -> dict:
    """A whole-request error: `status`, JSON body {"error":{"code":code,"message":"…"}}."""
    assert resp.status_code == status, f"expected {status} {code}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers.get("Content-Type")
    body = resp.json()
    assert set(body) == {"error"}, f"error body must hold only 'error': {body}"
    err = body["error"]
    assert err.get("code") == code, f"expected code {code}: {body}"
    assert isinstance(err.get("message"), str) and err["message"], f"error needs a message: {body}"
    return body


def retry_after_seconds(resp: requests.Response) -> int:
    value = resp.headers.get("Retry-After")
    assert value is not None, f"{resp.status_code} without Retry-After: {dict(resp.headers)}"
    assert value.isdigit() and int(value) >= 1, f"Retry-After must be integer seconds >= 1, got {value!r}"
    return int(value)


# --------------------------------------------------------------------------- traffic


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection error)
    detail: str
    ids: list[str]


class EventStream:
    """A few client threads posting batches of uniquely identified events.

    Remembers every outcome; `acked` holds the ids of events whose request got 200, `sent`
    every id sent (whatever the answer). Stops after `requests_total` requests (None: no
    limit), on `stop()`, or after `max_seconds`. Subclasses choose the events (`_events`).
    """

    def __init__(
        self,
        gateway: Proc,
        *,
        requests_total: int | None,
        events_per_request: int,
        threads: int = 3,
        interval: float = 0.0,
        max_seconds: float = 120,
        prefix: str | None = None,
    ):
        self.gateway = gateway
        self.requests_total = requests_total
        self.events_per_request = events_per_request
        self.interval = interval  # pause between two requests of one thread
        self.max_seconds = max_seconds
        self.prefix = prefix or f"st-{uuid.uuid4().hex[:6]}"
        self.outcomes: list[Outcome] = []
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def start(self):
        self._deadline = time.monotonic() + self.max_seconds
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "client threads did not finish"

    def wait_acked(self, n: int, timeout: float) -> None:
        wait_until(lambda: len(self.acked) >= n, timeout, interval=0.05, what=f"{n} acknowledged events")

    @property
    def statuses(self) -> Counter:
        return Counter(o.status for o in self.outcomes)

    def _take(self) -> int | None:
        with self._lock:
            if self.requests_total is not None and self._next >= self.requests_total:
                return None
            self._next += 1
            return self._next - 1

    def _events(self, n: int, scope: str) -> tuple[list[str], list[dict]]:
        """Request `n`: the ids it is counted by, and its events (valid `view` events with
        those ids as itemId)."""
        ids = [f"{self.prefix}-{n}-{i}" for i in range(self.events_per_request)]
        return ids, [event(scope, itemId=i, sessionId=f"{self.prefix}-s{(n + k) % 24}") for k, i in enumerate(ids)]

    def _run(self, thread: int) -> None:
        session = requests.Session()
        scope = self.gateway.creds.client_id
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            n = self._take()
            if n is None:
                break
            ids, events = self._events(n, scope)
            with self._lock:
                self.sent.update(ids)
            started = time.monotonic()
            try:
                resp = post(self.gateway, {"events": events}, session=session, timeout=60)
                status, detail = resp.status_code, resp.text[:300]
            except requests.RequestException as exc:
                status, detail = None, f"{type(exc).__name__}: {exc}"
            outcome = Outcome(started, time.monotonic(), status, detail, ids)
            with self._lock:
                self.outcomes.append(outcome)
                if status == 200:
                    self.acked.update(ids)
            if self.interval:
                self._stop.wait(self.interval)
        session.close()


# --------------------------------------------------------------------------- dependencies


class ServiceControl:
    """deploy/local/<name>.sh stop|start, for outage tests."""

    def __init__(self, script: Path):
        self.script = script

    def run(self, command: str, timeout: float = 300) -> None:
        if not self.script.exists():
            pytest.fail(f"{self.script} is missing")
        res = subprocess.run(
            ["bash", str(self.script), command], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert res.returncode == 0, f"{self.script.name} {command} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"

    def stop(self) -> None:
        self.run("stop")

    def start(self) -> None:
        self.run("start")


# --------------------------------------------------------------------------- exactly once, counted by tag
#
# Events without itemId (deduplication by itemId would hide a duplicate): the gateway makes
# their event id, so each carries a unique `tag` in a declared property instead, read back
# with visitParamExtractString(properties, 'tag'). The exact views of the contract:
# `event_log` (over `events FINAL` and `rejected_events FINAL`), `count() FROM events FINAL`,
# and the profile tables (`profile_stats.events`, `sessions.events` are uniqExact states of
# the Kafka record, read with uniqExactMerge). Plain `events` may briefly hold a second copy
# of a record after a fault, until ClickHouse merges it.

TICK_SCHEMA = {
    "eventType": "tick",
    "properties": [{"name": "tag", "type": "string", "required": True, "profileProperty": "lastTag"}],
}

TAG_SQL = "visitParamExtractString(properties, 'tag')"


def tick_bootstrap(names) -> dict:
    """The test's data source and the schema `tick` (string property `tag`, which sets the
    profile property `lastTag`)."""
    return {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": [TICK_SCHEMA]}


def tick_event(scope: str, tag: str, session_id: str, profile_id: str | None = None) -> dict:
    """A valid `tick` event WITHOUT itemId, carrying `tag`."""
    ev = {
        "eventType": "tick",
        "sessionId": session_id,
        "properties": {"tag": tag},
        "scope": scope,
        "timeStamp": utc_now_iso(),
        "source": {"itemId": "_", "itemType": "_"},
        "target": {"itemId": "_", "itemType": "_"},
    }
    if profile_id is not None:
        ev["profileId"] = profile_id
    return ev


class TagStream(EventStream):
    """A few client threads posting batches of `tick` events without itemId, each with a unique
    tag, over `sessions` session ids; about a third of the events name one of `profiles`
    profile ids (the others belong to their session's anonymous profile).

    `acked` holds the tags of events whose request got 200, `sent` every tag sent (whatever
    the answer). Stops after `requests_total` requests (None: no limit), on `stop()`, or after
    `max_seconds`.
    """

    def __init__(
        self,
        gateway: Proc,
        *,
        events_per_request: int = 10,
        threads: int = 3,
        interval: float = 0.1,
        requests_total: int | None = None,
        max_seconds: float = 300,
        sessions: int = 24,
        profiles: int = 3,
        prefix: str | None = None,
    ):
        super().__init__(
            gateway,
            requests_total=requests_total,
            events_per_request=events_per_request,
            threads=threads,
            interval=interval,
            max_seconds=max_seconds,
            prefix=prefix or f"tg-{uuid.uuid4().hex[:6]}",
        )
        self.sessions = sessions
        self.profiles = profiles

    def _events(self, n: int, scope: str) -> tuple[list[str], list[dict]]:
        tags, events = [], []
        for i in range(self.events_per_request):
            k = n * self.events_per_request + i
            tag = f"{self.prefix}-{k}"
            session = f"{self.prefix}-s{k % self.sessions}"
            # Deterministic but not tied to the session: sessions get identified now and then.
            profile = f"{self.prefix}-u{(k // 7) % self.profiles}" if (k * 7 + n) % 3 == 0 else None
            tags.append(tag)
            events.append(tick_event(scope, tag, session, profile))
        return tags, events


def physical_tags(db: str) -> Counter:
    """Rows per tag in plain `events` (physical copies, before any merge)."""
    rows = ch_query(f"SELECT {TAG_SQL} AS tag, count() FROM {db}.events GROUP BY tag", fmt="TabSeparated")
    return Counter({tag: int(n) for tag, n in rows})


def wait_tags_stored(names, db: str, tags: set[str], timeout: float = 120, replay_timeout: float = 90) -> None:
    """Wait until every tag of `tags` has a row in `events`, failing early (naming what is
    missing) once the group has committed the end of the topic without them; then until the
    group has nothing left to replay (so nothing more can be written for what was sent)."""
    consumer = _group_consumer(names.group)
    state = {"missing": set(tags), "lag": None}

    def stored() -> bool:
        # Lag first, then the rows: the worker commits only after its rows are in ClickHouse.
        lag = group_lag(names.group, names.topic, consumer)
        state["lag"] = lag
        missing = tags - set(physical_tags(db))
        state["missing"] = missing
        if missing and not lag:
            raise TagsLost(
                f"the group committed the end of {names.topic} but {len(missing)} of {len(tags)} acknowledged "
                f"tags are not in {db}.events (nor will be), e.g. {sorted(missing)[:10]}"
            )
        return not missing

    def check() -> bool:
        try:
            return stored()
        except TagsLost:
            raise
        except Exception as exc:  # noqa: BLE001 - Kafka or ClickHouse briefly away: not yet
            state["error"] = exc
            return False

    try:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s: {len(state['missing'])} of {len(tags)} acknowledged tags not "
                    f"in {db}.events, e.g. {sorted(state['missing'])[:5]}; group lag {state['lag']}; "
                    f"last error {state.get('error')!r}"
                )
            time.sleep(0.5)
    finally:
        consumer.close()
    wait_group_caught_up(names.group, names.topic, timeout=replay_timeout)


class TagsLost(AssertionError):
    pass


def physical_summary(db: str) -> dict:
    """What plain `events` physically holds (copies included): for diagnostics."""
    row = ch_query(
        f"SELECT count() AS rows, uniqExact(event_id) AS ids, uniqExact({TAG_SQL}) AS tags, "
        f"uniqExact(kafka_partition, kafka_offset) AS positions FROM {db}.events"
    )[0]
    return {k: int(v) for k, v in row.items()}


def assert_tags_exactly_once(db: str, acked: set[str]) -> set[str]:
    """The exact view: every acknowledged tag exactly once in `event_log` (status accepted),
    nothing rejected, and `count() FROM events FINAL` equals the number of distinct stored
    tags (an unacknowledged event may be stored, once). Returns the stored tags."""
    physical = physical_summary(db)
    print(f"{db}.events physically: {physical} (acknowledged tags: {len(acked)})")
    counts = Counter(
        {
            tag: int(n)
            for tag, n in ch_query(
                f"SELECT {TAG_SQL} AS tag, count() FROM {db}.event_log WHERE status = 'accepted' GROUP BY tag",
                fmt="TabSeparated",
            )
        }
    )
    missing = acked - set(counts)
    dups = {t: n for t, n in counts.items() if n > 1}
    assert not dups, (
        f"{len(dups)} tags more than once in {db}.event_log (the exact view), e.g. {sorted(dups.items())[:5]}; "
        f"plain events: {physical}"
    )
    assert not missing, f"{len(missing)} acknowledged tags not in {db}.event_log, e.g. {sorted(missing)[:5]}"
    rejected = int(ch_scalar(f"SELECT count() FROM {db}.event_log WHERE status = 'rejected'"))
    assert rejected == 0, f"{rejected} events rejected: {store_rows(db, 'event_log', 'status = ' + sql_str('rejected'))}"
    final = ch_query(f"SELECT count() AS n, uniqExact(event_id) AS ids FROM {db}.events FINAL")[0]
    assert int(final["n"]) == len(counts), (
        f"count() FROM events FINAL is {final['n']}, but {len(counts)} distinct tags are stored; plain events: {physical}"
    )
    assert int(final["ids"]) == int(final["n"]), f"an event id twice in events FINAL: {final}"
    return set(counts)


def store_rows(db: str, table: str, where: str, limit: int = 5) -> list[dict]:
    return ch_query(f"SELECT * FROM {db}.{table} WHERE {where} LIMIT {limit}")


def assert_profile_counts_exact(db: str) -> None:
    """Profile and session counts equal what `events FINAL` holds: in total and per profile
    (events, sessions, first/last seen) and per session (events)."""
    final = int(ch_scalar(f"SELECT count() FROM {db}.events FINAL"))
    total = int(ch_scalar(
        f"SELECT sum(n) FROM (SELECT profile_id, uniqExactMerge(events) AS n FROM {db}.profile_stats GROUP BY profile_id)"
    ))
    sessions_total = int(ch_scalar(
        f"SELECT sum(n) FROM (SELECT scope, session_id, uniqExactMerge(events) AS n FROM {db}.sessions "
        f"GROUP BY scope, session_id)"
    ))
    assert total == final, f"profile_stats counts {total} events, events FINAL holds {final}"
    assert sessions_total == final, f"sessions counts {sessions_total} events, events FINAL holds {final}"

    def by_key(sql: str, keys: int) -> dict:
        return {tuple(r[:keys]): tuple(int(v) for v in r[keys:]) for r in ch_query(sql, fmt="TabSeparated")}

    stats = by_key(
        f"SELECT profile_id, uniqExactMerge(events), uniqExactMerge(sessions), minMerge(first_seen_ms), "
        f"maxMerge(last_seen_ms) FROM {db}.profile_stats GROUP BY profile_id",
        1,
    )
    expected = by_key(
        f"SELECT profile_id, count(), uniqExact(concat(scope, ':', session_id)), min(event_time_ms), "
        f"max(event_time_ms) FROM {db}.events FINAL GROUP BY profile_id",
        1,
    )
    differ = {k: (stats.get(k), expected.get(k)) for k in set(stats) | set(expected) if stats.get(k) != expected.get(k)}
    assert not differ, (
        f"{len(differ)} profiles whose profile_stats (events, sessions, first, last) differ from events FINAL "
        f"(profile_stats, events FINAL): {sorted(differ.items())[:5]}"
    )
    sessions = by_key(
        f"SELECT scope, session_id, uniqExactMerge(events) FROM {db}.sessions GROUP BY scope, session_id", 2
    )
    expected_sessions = by_key(f"SELECT scope, session_id, count() FROM {db}.events FINAL GROUP BY scope, session_id", 2)
    differ = {
        k: (sessions.get(k), expected_sessions.get(k))
        for k in set(sessions) | set(expected_sessions)
        if sessions.get(k) != expected_sessions.get(k)
    }
    assert not differ, (
        f"{len(differ)} sessions whose event count differs from events FINAL (sessions, events FINAL): "
        f"{sorted(differ.items())[:5]}"
    )


def readers_snapshot(db: str) -> dict:
    """Everything an analyst reads, as plain values: the event log, the exact event count,
    profile stats, properties and aliases, sessions."""

    def rows(sql: str) -> list:
        return sorted(tuple(r) for r in ch_query(sql, fmt="TabSeparated"))

    return {
        "event_log": rows(
            f"SELECT event_id, status, {TAG_SQL}, scope, session_id, profile_id, event_time_ms, received_at_ms, "
            f"kafka_partition, kafka_offset, properties, reasons FROM {db}.event_log"
        ),
        "count() FROM events FINAL": ch_scalar(f"SELECT count() FROM {db}.events FINAL"),
        "profile_stats": rows(
            f"SELECT profile_id, uniqExactMerge(events), uniqExactMerge(sessions), minMerge(first_seen_ms), "
            f"maxMerge(last_seen_ms) FROM {db}.profile_stats GROUP BY profile_id"
        ),
        "profile_properties": rows(
            f"SELECT profile_id, name, argMaxMerge(value) FROM {db}.profile_properties GROUP BY profile_id, name"
        ),
        "profile_aliases": rows(f"SELECT alias_id, argMaxMerge(target) FROM {db}.profile_aliases GROUP BY alias_id"),
        "sessions": rows(
            f"SELECT scope, session_id, argMaxMerge(profile_id), minMerge(first_seen_ms), maxMerge(last_seen_ms), "
            f"uniqExactMerge(events) FROM {db}.sessions GROUP BY scope, session_id"
        ),
    }


# --------------------------------------------------------------------------- freezing processes

_FROZEN: set[int] = set()


@atexit.register
def _thaw_leftovers() -> None:
    """Last resort when pytest exits while a process is still stopped (e.g. the shared
    ClickHouse server): never leave one behind."""
    for pid in list(_FROZEN):
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass


class Freezer:
    """SIGSTOP / SIGCONT of processes. `frozen(pid)` continues the process whatever happens;
    `thaw_all()` (a fixture's teardown) continues every process still stopped."""

    def __init__(self) -> None:
        self.stopped: set[int] = set()

    def stop(self, pid: int) -> None:
        self.stopped.add(pid)
        _FROZEN.add(pid)
        os.kill(pid, signal.SIGSTOP)

    def cont(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        self.stopped.discard(pid)
        _FROZEN.discard(pid)

    @contextlib.contextmanager
    def frozen(self, pid: int):
        self.stop(pid)
        try:
            yield
        finally:
            self.cont(pid)

    def thaw_all(self) -> None:
        for pid in list(self.stopped):
            self.cont(pid)


def clickhouse_server_pid() -> int:
    """The pid of the local ClickHouse server (deploy/local/clickhouse.sh's pid file, else the
    one clickhouse-server process found in /proc): only the server, never a client."""

    def is_server(pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        name = os.path.basename(argv[0].decode(errors="replace"))
        second = argv[1].decode(errors="replace") if len(argv) > 1 else ""
        return state != "Z" and (name == "clickhouse-server" or (name == "clickhouse" and second == "server"))

    pid_file = Path(os.environ.get("POWEHI_CACHE", "/var/cache/powehi")) / "run" / "clickhouse.pid"
    try:
        pid = int(pid_file.read_text().strip())
        if is_server(pid):
            return pid
    except (OSError, ValueError):
        pass
    found = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and is_server(int(p.name))]
    assert len(found) == 1, f"expected one clickhouse-server process, found {found} (pid file {pid_file})"
    return found[0]
