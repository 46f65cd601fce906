"""While Kafka is down the gateway refuses with 503 + Retry-After and acknowledges nothing;
once Kafka is back, ingestion resumes by itself and nothing acknowledged before is lost."""

from __future__ import annotations

import threading
import time

from e2e_support import assert_error, event, post, retry_after_seconds, wait_group_caught_up, wait_until

DELIVERY_TIMEOUT_MS = 3000


def send(gateway, n: int, tag: str):
    scope = gateway.creds.client_id
    events = [event(scope, sessionId=f"{tag}-{i % 4}") for i in range(n)]
    started = time.monotonic()
    resp = post(gateway, {"events": events}, timeout=60)
    return resp, {e["itemId"] for e in events}, time.monotonic() - started


def test_kafka_outage_answers_503_and_loses_nothing_acknowledged(
    names, start_gateway, start_worker, store, kafka_control
):
    """503 kafka_unavailable (never 200) and /readyz 503 during the outage; afterwards new
    requests succeed within 60 s and every acknowledged event is stored exactly once."""
    gateway = start_gateway(POWEHI_KAFKA_DELIVERY_TIMEOUT_MS=DELIVERY_TIMEOUT_MS)
    worker = start_worker()
    acked: set[str] = set()

    for _ in range(5):
        resp, ids, _ = send(gateway, 20, "before")
        assert resp.status_code == 200, resp.text
        acked |= ids

    kafka_control.stop()
    try:
        for attempt in range(4):
            resp, _, took = send(gateway, 5, "during")
            assert resp.status_code != 200, "a request was acknowledged while Kafka was down"
            assert_error(resp, 503, "kafka_unavailable")
            retry_after_seconds(resp)
            assert took < DELIVERY_TIMEOUT_MS / 1000 + 10, f"attempt {attempt} took {took:.1f}s to fail"
        wait_until(lambda: gateway.get("/readyz").status_code == 503, 30, what="gateway /readyz 503 without Kafka")
        assert gateway.get("/healthz").status_code == 200, "the gateway process is up: /healthz 200"
    finally:
        kafka_control.start()

    # Recovery: poll with real requests; until the first 200 each answer must be a clean 503.
    deadline = time.monotonic() + 60
    recovered = False
    while not recovered and time.monotonic() < deadline:
        resp, ids, _ = send(gateway, 5, "recovery")
        if resp.status_code == 200:
            acked |= ids
            recovered = True
        else:
            assert_error(resp, 503, "kafka_unavailable")
            time.sleep(1)
    assert recovered, "no request succeeded within 60 s of Kafka being back"
    wait_until(lambda: gateway.get("/readyz").status_code == 200, 60, what="gateway /readyz 200 again")

    for _ in range(5):
        resp, ids, _ = send(gateway, 20, "after")
        assert resp.status_code == 200, resp.text
        acked |= ids

    store.wait_for_ids(acked, timeout=120)
    wait_group_caught_up(names.group, names.topic, timeout=90)
    store.assert_each_stored_once(acked)
    assert worker.alive(), "the worker must ride out a Kafka restart"


def test_a_full_producer_queue_is_a_503_at_once(names, start_gateway, kafka_control):
    """With Kafka away, the first request's events wait in the producer's queue (until the
    delivery timeout); a request that finds the queue full is answered 503 at once instead of
    holding its memory while it waits for room."""
    gateway = start_gateway(POWEHI_KAFKA_QUEUE_MAX_EVENTS=100, POWEHI_KAFKA_DELIVERY_TIMEOUT_MS=10_000)
    resp, _, _ = send(gateway, 5, "warm")
    assert resp.status_code == 200, resp.text
    kafka_control.stop()
    try:
        holder = threading.Thread(target=send, args=(gateway, 90, "holder"))
        holder.start()
        time.sleep(0.5)  # its 90 events are queued
        resp, _, took = send(gateway, 20, "over")
        assert_error(resp, 503, "kafka_unavailable")
        assert "queue is full" in resp.json()["error"]["message"], resp.text
        assert took < 1.0, f"{took:.2f}s to refuse with a full queue"
        holder.join(30)
    finally:
        kafka_control.start()
