"""What operators rely on: health, readiness and metrics endpoints, a graceful gateway stop,
events waiting in Kafka for the first worker, the raw topic's compression, and --help that
documents every setting."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import threading
import time

import pytest
import requests

from admin_support import assert_exits_naming
from e2e_support import (
    GATEWAY_BIN,
    KAFKA_SCRIPT,
    WORKER_BIN,
    EventStream,
    event,
    group_members_partitions,
    metric_sum,
    parse_metrics,
    post,
    topic_partitions,
    wait_group_caught_up,
    wait_until,
)

GATEWAY_METRICS = [
    "powehi_gateway_http_requests_total",
    "powehi_gateway_events_total",
    "powehi_gateway_request_duration_seconds",
]
WORKER_METRICS = [
    "powehi_worker_assigned_partitions",
    "powehi_worker_paused",
    "powehi_worker_rows_inserted_total",
    "powehi_worker_records_skipped_total",
    "powehi_worker_poison_records_total",
]
GATEWAY_SETTINGS = [
    "POWEHI_HTTP_ADDR",
    "POWEHI_ADMIN_ADDR",
    "POWEHI_PATH_PREFIX",
    "POWEHI_KAFKA_BROKERS",
    "POWEHI_RAW_TOPIC",
    "POWEHI_RAW_TOPIC_PARTITIONS",
    "POWEHI_BOOTSTRAP",
    "POWEHI_MAX_BODY_BYTES",
    "POWEHI_MAX_EVENT_BYTES",
    "POWEHI_KAFKA_DELIVERY_TIMEOUT_MS",
    "POWEHI_KAFKA_COMPRESSION",
    "POWEHI_LOG",
]
WORKER_SETTINGS = [
    "POWEHI_KAFKA_BROKERS",
    "POWEHI_RAW_TOPIC",
    "POWEHI_CONSUMER_GROUP",
    "POWEHI_CLICKHOUSE_URL",
    "POWEHI_CLICKHOUSE_DATABASE",
    "POWEHI_WORKER_HTTP_ADDR",
    "POWEHI_BATCH_MAX_ROWS",
    "POWEHI_BATCH_MAX_AGE_MS",
    "POWEHI_LOG",
]


def is_smile(route: str) -> bool:
    return "smile" in route


def gateway_counters(gateway) -> dict:
    samples = gateway.metrics()
    return {
        "accepted": metric_sum(samples, "powehi_gateway_events_total", outcome="accepted") or 0,
        "refused": metric_sum(samples, "powehi_gateway_events_total", outcome="refused") or 0,
        "smile_200": metric_sum(samples, "powehi_gateway_http_requests_total", route=is_smile, status="200") or 0,
        "durations": metric_sum(samples, "powehi_gateway_request_duration_seconds_count") or 0,
    }


def worker_inserted(worker, table: str) -> float:
    return worker.metric("powehi_worker_rows_inserted_total", table=table) or 0


def test_health_readiness_and_metrics_of_both_processes(names, pipeline, store):
    """/healthz and /readyz answer 200; /metrics is Prometheus text with the documented
    names, the partition gauge says what the worker owns, and the counters move by exactly
    what was sent."""
    gateway, worker = pipeline
    for proc in (gateway, worker):
        for path in ("/healthz", "/readyz"):
            assert proc.get(path).status_code == 200, f"{proc.name} {path}"
        resp = proc.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers.get("Content-Type", "").startswith("text/plain"), resp.headers.get("Content-Type")

    # The broker says the only worker of the group owns every partition (the topic is still empty).
    partitions = topic_partitions(names.topic)
    assert group_members_partitions(names.group) == [partitions]
    wait_until(
        lambda: worker.assigned_partitions() == partitions,
        15,
        what=f"powehi_worker_assigned_partitions to report the {partitions} partitions the worker owns",
    )

    before = gateway_counters(gateway)
    inserted_before = worker_inserted(worker, "events"), worker_inserted(worker, "rejected_events")
    scope = gateway.creds.client_id
    good = [event(scope) for _ in range(7)]
    refused = event(f"{scope}-not-mine")
    resp = post(gateway, {"events": good + [refused]})
    assert resp.status_code == 200 and resp.json()["accepted"] == 7, resp.text

    after = gateway_counters(gateway)
    assert after["accepted"] - before["accepted"] == 7, (before, after)
    assert after["refused"] - before["refused"] == 1, (before, after)
    assert after["smile_200"] - before["smile_200"] == 1, (before, after)
    assert after["durations"] > before["durations"], (before, after)

    store.wait_for_ids({e["itemId"] for e in good}, timeout=15)
    inserted = lambda: (  # noqa: E731
        worker_inserted(worker, "events") - inserted_before[0],
        worker_inserted(worker, "rejected_events") - inserted_before[1],
    )
    wait_until(
        lambda: inserted() == (7, 1),
        15,
        what="rows_inserted_total to count 7 events and 1 rejected event",
    )

    gateway_text, worker_text = gateway.get("/metrics").text, worker.get("/metrics").text
    names_in = lambda text: {s[0] for s in parse_metrics(text)}  # noqa: E731
    missing = [m for m in GATEWAY_METRICS if not any(n.startswith(m) for n in names_in(gateway_text))]
    missing += [m for m in WORKER_METRICS if m not in worker_text]
    assert not missing, f"metrics not exported: {missing}"
    assert worker.metric("powehi_worker_paused") == 0


class SlowUpload(threading.Thread):
    """A request whose body arrives in two halves: the second only after `release` is set.

    Its headers and first half are at the gateway before the signal, so it is surely in flight.
    """

    def __init__(self, gateway, events: list[dict], release: threading.Event):
        super().__init__(daemon=True)
        self.gateway, self.release = gateway, release
        self.ids = {e["itemId"] for e in events}
        self.body = json.dumps({"events": events}).encode()
        self.first_half_sent = threading.Event()
        self.status: int | None = None
        self.detail = ""

    def chunks(self):
        half = len(self.body) // 2
        yield self.body[:half]
        self.first_half_sent.set()
        self.release.wait(20)
        time.sleep(0.2)  # well after the signal
        yield self.body[half:]

    def run(self) -> None:
        try:
            resp = post(self.gateway, self.chunks(), session=requests.Session(), timeout=30)
            self.status, self.detail = resp.status_code, resp.text[:300]
        except requests.RequestException as exc:
            self.status, self.detail = None, f"{type(exc).__name__}: {exc}"


def test_sigterm_of_gateway_drains_in_flight_requests(names, pipeline, store):
    """After SIGTERM, requests in flight still get their answer, every 200 is stored, and the
    gateway exits 0 within 10 s."""
    gateway, _ = pipeline
    scope = gateway.creds.client_id
    stream = EventStream(gateway, requests_total=10**6, events_per_request=200, threads=3, max_seconds=60).start()
    stream.wait_acked(2000, timeout=30)
    release = threading.Event()
    uploads = [SlowUpload(gateway, [event(scope) for _ in range(50)], release) for _ in range(3)]
    for upload in uploads:
        upload.start()
    for upload in uploads:
        assert upload.first_half_sent.wait(10), "a slow upload could not start"
    time.sleep(0.2)  # let the gateway read the first halves: these requests are now in flight

    signalled = time.monotonic()
    gateway.terminate()
    release.set()
    try:
        code = gateway.wait_exit(10)
    finally:
        stream.stop()
        stream.join(timeout=90)
        for upload in uploads:
            upload.join(30)
    assert code == 0, f"the gateway exited with {code} after SIGTERM"

    cut = [u.detail for u in uploads if u.status != 200]
    assert not cut, f"{len(cut)} of {len(uploads)} requests in flight at SIGTERM not answered 200: {cut}"
    # Stream requests that had surely reached the gateway before the signal and were still open.
    in_flight = [o for o in stream.outcomes if o.started < signalled - 0.01 and o.ended > signalled]
    cut = [o.detail for o in in_flight if o.status != 200]
    assert not cut, f"{len(cut)} of {len(in_flight)} in-flight requests not answered 200: {cut[:3]}"

    acked = stream.acked.union(*(u.ids for u in uploads))
    store.wait_for_ids(acked, timeout=60)
    wait_group_caught_up(names.group, names.topic, timeout=60)
    store.assert_each_stored_once(acked)


def test_events_acknowledged_before_any_worker_runs_are_stored(start_gateway, start_worker, store):
    """A worker started after the gateway acknowledged events still stores them all
    (a new consumer group starts from the beginning of the topic)."""
    gateway = start_gateway()
    scope = gateway.creds.client_id
    acked = set()
    for _ in range(3):
        batch = [event(scope) for _ in range(10)]
        resp = post(gateway, {"events": batch})
        assert resp.status_code == 200, resp.text
        acked |= {e["itemId"] for e in batch}

    start_worker(wait="ready")
    store.wait_for_ids(acked, timeout=60)
    store.assert_each_stored_once(acked)


def raw_topic_codecs(topic: str) -> set[str]:
    """Codecs of the record batches the local broker stored for `topic`, read from its log
    segments with Kafka's own DumpLogSegments (deploy/local/kafka.sh's cache and data dir)."""
    cache = os.environ.get("POWEHI_CACHE", "/var/cache/powehi")
    version = re.search(r"^KAFKA_VERSION=(\S+)", KAFKA_SCRIPT.read_text(), re.M).group(1)
    segments = sorted(glob.glob(f"{cache}/kafka-data/{topic}-*/*.log"))
    assert segments, f"no log segments of {topic} under {cache}/kafka-data"
    dump = subprocess.run(
        ["java", "-Xmx256m", "-Dlog4j2.level=ERROR", "-cp", f"{cache}/kafka-{version}/libs/*",
         "kafka.tools.DumpLogSegments", "--files", ",".join(segments)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    return {codec.lower() for codec in re.findall(r"compresscodec: (\w+)", dump)}


def test_raw_topic_compression_is_a_setting(names, start_gateway, start_worker, store):
    """The raw topic's batches are LZ4-compressed by default and POWEHI_KAFKA_COMPRESSION
    picks another codec (the broker's log says which); a worker stores events whatever the
    codec, and a codec this build lacks (zstd) stops the gateway at start, naming the flag."""
    refused = start_gateway(wait_ready=False, POWEHI_KAFKA_COMPRESSION="zstd")
    assert_exits_naming(refused, 30, "kafka-compression")

    acked = set()

    def send_through(gateway) -> None:
        for _ in range(3):
            batch = [event(gateway.creds.client_id) for _ in range(20)]
            resp = post(gateway, {"events": batch})
            assert resp.status_code == 200, resp.text
            acked.update(e["itemId"] for e in batch)

    send_through(start_gateway())
    assert raw_topic_codecs(names.topic) == {"lz4"}
    send_through(start_gateway(POWEHI_KAFKA_COMPRESSION="snappy"))
    assert raw_topic_codecs(names.topic) == {"lz4", "snappy"}

    start_worker(wait="ready")
    store.wait_for_ids(acked, timeout=60)
    store.assert_each_stored_once(acked)


@pytest.mark.parametrize(
    "binary, settings", [(GATEWAY_BIN, GATEWAY_SETTINGS), (WORKER_BIN, WORKER_SETTINGS)], ids=["gateway", "worker"]
)
def test_help_documents_every_setting(binaries, binary, settings):
    """--help exits 0 and names every POWEHI_* variable the binary reads."""
    res = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=10, check=False)
    assert res.returncode == 0, f"--help exited {res.returncode}: {res.stderr[-500:]}"
    missing = [s for s in settings if s not in res.stdout]
    assert not missing, f"--help does not mention {missing}:\n{res.stdout}"
