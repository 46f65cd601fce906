"""While ClickHouse is down the gateway keeps acknowledging (Kafka holds the events), the
worker pauses and stays up; when ClickHouse is back everything arrives exactly once, without
restarting the worker."""

from __future__ import annotations

import time

from e2e_support import event, post, wait_group_caught_up, wait_until

MIN_OUTAGE_S = 10  # long enough for several failed insert attempts


def send(gateway, n: int, tag: str) -> set[str]:
    scope = gateway.creds.client_id
    events = [event(scope, sessionId=f"{tag}-{i % 4}") for i in range(n)]
    resp = post(gateway, {"events": events})
    assert resp.status_code == 200, f"Kafka is up, so the gateway must acknowledge: {resp.status_code} {resp.text}"
    return {e["itemId"] for e in events}


def test_clickhouse_outage_pauses_the_worker_and_loses_nothing(names, pipeline, store, clickhouse_control):
    """powehi_worker_paused is 1 and /healthz 200 during the outage; afterwards every
    acknowledged event is stored exactly once by the same worker process."""
    gateway, worker = pipeline
    acked = send(gateway, 50, "before")
    store.wait_for_ids(acked, timeout=15)

    clickhouse_control.stop()
    try:
        outage_started = time.monotonic()
        acked |= send(gateway, 50, "during")
        wait_until(lambda: worker.metric("powehi_worker_paused") == 1, 60, what="powehi_worker_paused 1")
        # Traffic continues while ClickHouse stays down for a while.
        while time.monotonic() < outage_started + MIN_OUTAGE_S:
            acked |= send(gateway, 20, "during")
            time.sleep(0.5)
        assert worker.alive(), f"the worker exited ({worker.popen.returncode}) while ClickHouse was down"
        assert worker.get("/healthz").status_code == 200
        assert worker.metric("powehi_worker_paused") == 1
    finally:
        clickhouse_control.start()

    store.wait_for_ids(acked, timeout=120)
    wait_until(lambda: worker.metric("powehi_worker_paused") == 0, 60, what="powehi_worker_paused back to 0")
    wait_group_caught_up(names.group, names.topic, timeout=90)
    store.assert_each_stored_once(acked)
    assert store.count("events") == len(acked)
    assert worker.alive(), "the same worker process must have done the work"
