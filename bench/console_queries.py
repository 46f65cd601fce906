#!/usr/bin/env python3
"""How long the console's reads take with 10 million events of one data source.

Creates a ClickHouse database of its own (migrated by `event-worker migrate`), fills `events`
with ROWS accepted events of data source `bench` spread over the last 5 days of arrivals
(500,000 sessions, 3 event types) and `rejected_events` with a tenth as many, starts a gateway
whose event-log reads point at it, and times every request the console's pages make, through
the admin API, as the page makes them (median and worst of RUNS). Prints a Markdown table,
then drops the database and the Kafka topics it made. Traffic goes to 127.0.0.1 only.

    bench/console_queries.py [ROWS] [RUNS]        # defaults: 10000000 5

Needs Kafka and ClickHouse running (deploy/local) and the release binaries in
$CARGO_TARGET_DIR/release (default /var/cache/powehi/target).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

CH = os.environ.get("POWEHI_CLICKHOUSE_URL", "http://127.0.0.1:8123").rstrip("/")
KAFKA = os.environ.get("POWEHI_KAFKA_BROKERS", "127.0.0.1:9092")
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/cache/powehi/target")
TOKEN = "bench-admin-token"


def ch(sql: str) -> str:
    request = urllib.request.Request(CH + "/", data=sql.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=1800) as answer:
        return answer.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[float, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{url}: {error.code} {error.read()[:300]!r}") from None
    return (time.perf_counter() - start) * 1000, body


def fill(db: str, rows: int) -> None:
    now_ms = int(time.time() * 1000)
    span_ms = 5 * 24 * 3600 * 1000
    step = max(1, span_ms // rows)
    ch(f"""INSERT INTO {db}.events (event_id, item_id, scope, event_type, session_id, profile_id,
        event_time, event_time_ms, received_at, received_at_ms, corrected_time, corrected_time_ms,
        properties, source_id, source_type, target_id, target_type, kafka_partition, kafka_offset,
        schema_version, profile_property_names, profile_property_values)
      SELECT concat('ev-', toString(number)), '', 'bench',
        arrayElement(['view', 'click', 'purchase'], (number % 3) + 1),
        concat('s-', toString(number % 500000)), concat('anon:bench:s-', toString(number % 500000)),
        toDateTime(intDiv(t, 1000)), t, toDateTime(intDiv(t, 1000)), t, toDateTime(intDiv(t, 1000)), t,
        '{{"url":"https://shop.example/p"}}', '_', '_', '_', '_', toUInt32(number % 12), number, 1, [], []
      FROM (SELECT number, toUInt64({now_ms - span_ms} + number * {step}) AS t FROM system.numbers LIMIT {rows})""")
    rejected = rows // 10
    ch(f"""INSERT INTO {db}.rejected_events (event_id, scope, event_type, session_id, profile_id,
        event_time, event_time_ms, received_at, received_at_ms, stage, reasons, raw, kafka_partition, kafka_offset)
      SELECT concat('rj-', toString(number)), 'bench', 'checkout', concat('s-', toString(number % 500000)), '',
        toDateTime(intDiv(t, 1000)), t, toDateTime(intDiv(t, 1000)), t, 'worker',
        '[{{"code":"unknown_event_type","path":"$.eventType","message":"no schema"}}]', '{{}}',
        toUInt32(number % 12), {rows} + number
      FROM (SELECT number, toUInt64({now_ms - span_ms} + number * {step * 10}) AS t FROM system.numbers LIMIT {rejected})""")


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    tag = uuid.uuid4().hex[:10]
    db = f"powehi_bench_console_{tag}"
    topics = [f"powehi.bench.{tag}.raw", f"powehi.bench.{tag}.config"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWEHI_")}
    env.update({"POWEHI_CLICKHOUSE_URL": CH, "POWEHI_CLICKHOUSE_DATABASE": db, "POWEHI_KAFKA_BROKERS": KAFKA,
                "POWEHI_RAW_TOPIC": topics[0], "POWEHI_CONFIG_TOPIC": topics[1], "POWEHI_LOG": "warn"})
    gateway = None
    try:
        subprocess.run([f"{TARGET}/release/event-worker", "migrate"], env={**env, "POWEHI_WORKER_HTTP_ADDR": "127.0.0.1:0"},
                       check=True, capture_output=True, timeout=120)
        start = time.monotonic()
        fill(db, rows)
        print(f"filled {rows:,} events and {rows // 10:,} rejected in {time.monotonic() - start:.0f}s "
              f"(ClickHouse {ch('SELECT version()').strip()})", file=sys.stderr)
        boot = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"dataSources": [{"id": "bench", "name": "Bench", "writeKeys": ["bench-key"], "enabled": True}],
                   "eventSchemas": []}, boot)
        boot.close()
        admin = f"127.0.0.1:{free_port()}"
        gateway = subprocess.Popen([f"{TARGET}/release/ingest-gateway"], env={
            **env, "POWEHI_ADMIN_TOKEN": TOKEN, "POWEHI_ADMIN_ADDR": admin, "POWEHI_BOOTSTRAP": boot.name,
            "POWEHI_HTTP_ADDR": f"127.0.0.1:{free_port()}"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://{admin}/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"{base}/datasources/bench")[1]["id"] == "bench":
                    break
            except (Exception, SystemExit):  # noqa: BLE001 - still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        day_end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time()))
        day_start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400 + 1))
        recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 10))
        day_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400 + 60))
        log = f"{base}/datasources/bench/events"
        day = f"from={urllib.parse.quote(day_ago)}"

        def sixth_page(params: str) -> str:
            """The URL of the 6th page, as "Load more" five times gets it."""
            cursor = None
            for _ in range(5):
                cursor = get(f"{log}?limit=100&{params}" + (f"&cursor={cursor}" if cursor else ""))[1]["nextCursor"]
            return f"{log}?limit=100&{params}&cursor={cursor}"

        cases = [
            ("Event logs, default view (last 24 hours), first page", f"{log}?limit=100&{day}"),
            ("Event logs, default view, 6th page (Load more ×5)", sixth_page(day)),
            ("Event logs, all time (all=1), first page", f"{log}?limit=100"),
            ("Event logs, all time, 6th page", sixth_page("")),
            ("Event logs, last 24 hours, status=rejected", f"{log}?limit=100&{day}&status=rejected"),
            ("Event logs, last 24 hours, eventType=purchase", f"{log}?limit=100&{day}&eventType=purchase"),
            ("Event logs, last 24 hours, one session", f"{log}?limit=100&{day}&sessionId=s-4242"),
            ("Event logs, last 24 hours, one profile (merged ids resolved)", f"{log}?limit=100&{day}&profileId=anon%3Abench%3As-4242"),
            ("Profile page: recent events (20, no time bound)", f"{log}?limit=20&profileId=anon%3Abench%3As-4242"),
            ("Event logs, last hour", f"{log}?limit=100&from={urllib.parse.quote(hour_ago)}"),
            ("Live mode poll (from = newest shown, 10 s ago)", f"{log}?limit=100&from={urllib.parse.quote(recent)}"),
            ("Data sources: last-hour column (event-counts, 1 hour)", f"{base}/datasources/bench/event-counts"),
            ("Chart: event-counts, 24 hours (the default view, the widest)",
             f"{base}/datasources/bench/event-counts?from={urllib.parse.quote(day_start)}&to={urllib.parse.quote(day_end)}"),
        ]
        print(f"| console request ({rows:,} events + {rows // 10:,} rejected in one data source) | median ms | worst ms |")
        print("|---|---:|---:|")
        for name, url in cases:
            times = [get(url)[0] for _ in range(runs)]
            print(f"| {name} | {statistics.median(times):.0f} | {max(times):.0f} |")
    finally:
        if gateway is not None:
            gateway.kill()
            gateway.wait(timeout=10)
        ch(f"DROP DATABASE IF EXISTS {db}")
        try:
            from confluent_kafka.admin import AdminClient

            for future in AdminClient({"bootstrap.servers": KAFKA}).delete_topics(topics, operation_timeout=10).values():
                try:
                    future.result(timeout=15)
                except Exception:  # noqa: BLE001 - a topic that was never made
                    pass
        except ImportError:
            print(f"delete the topics {topics} by hand (confluent-kafka missing)", file=sys.stderr)


if __name__ == "__main__":
    main()
