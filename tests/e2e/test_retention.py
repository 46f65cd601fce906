"""Retention (issue 16, point 3): with POWEHI_RETENTION_DAYS a worker drops whole months of
stored events (events, rejected_events, stored_positions) once their last day is older than
the retention, on its schedule, and keeps everything younger; without it nothing is dropped.
Against a real worker, Kafka and ClickHouse 18.16."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from e2e_support import ch_exec, ch_query, event, post, sql_str, wait_until, worker_command

TABLES = ("events", "rejected_events", "stored_positions")


def month_of(t: datetime) -> str:
    return t.strftime("%Y%m")


def seed(db: str, received: datetime, tag: str) -> None:
    """One accepted and one rejected row received at `received` (what a worker wrote then)."""
    s, ms = int(received.timestamp()), int(received.timestamp() * 1000)
    ch_exec(
        f"INSERT INTO {db}.events (event_id, scope, event_type, session_id, profile_id, event_time, "
        "event_time_ms, received_at, received_at_ms, properties, kafka_partition, kafka_offset) VALUES "
        f"({sql_str('a-' + tag)}, 'old', 'view', 's', '', toDateTime({s}, 'UTC'), {ms}, toDateTime({s}, 'UTC'), "
        f"{ms}, '{{}}', 99, {s})"
    )
    ch_exec(
        f"INSERT INTO {db}.rejected_events (event_id, scope, event_type, session_id, received_at, "
        "received_at_ms, stage, reasons, raw, kafka_partition, kafka_offset) VALUES "
        f"({sql_str('r-' + tag)}, 'old', 'view', 's', toDateTime({s}, 'UTC'), {ms}, 'gateway', '[]', '{{}}', 99, {s + 1})"
    )


def months(db: str) -> dict[str, set[str]]:
    rows = ch_query(
        f"SELECT DISTINCT table, partition FROM system.parts WHERE database = {sql_str(db)} "
        f"AND active AND table IN {TABLES!r}"
    )
    out: dict[str, set[str]] = {t: set() for t in TABLES}
    for r in rows:
        out[r["table"]].add(r["partition"])
    return out


def test_months_past_the_retention_are_dropped_and_younger_ones_kept(names, start_gateway, start_worker, store):
    db = names.database
    worker_command(db, "migrate")
    now = datetime.now(timezone.utc)
    ancient = datetime(2020, 1, 15, tzinfo=timezone.utc)
    # The month before this one ended less than 40 days ago: kept, as is this month.
    last_month = now.replace(day=1) - timedelta(days=1)
    for when, tag in ((ancient, "ancient"), (last_month, "last-month")):
        seed(db, when, tag)
    before = months(db)
    assert all({"202001", month_of(last_month)} <= before[t] for t in TABLES), before

    gateway = start_gateway()
    worker = start_worker(POWEHI_RETENTION_DAYS="40", POWEHI_RETENTION_INTERVAL_SECS="1")
    live = event(gateway.creds.client_id)
    assert post(gateway, {"events": [live]}).status_code == 200
    store.wait_for_ids({live["itemId"]}, timeout=60)

    wait_until(lambda: all("202001" not in ms for ms in months(db).values()), 60,
               what="the 2020-01 partitions dropped", describe=lambda: str(months(db)))
    after = months(db)
    for table in TABLES:
        assert month_of(last_month) in after[table], (table, after)
    assert month_of(now) in after["events"], after
    ids = {r["event_id"] for r in store.rows("events", columns="event_id")}
    assert ids == {"a-last-month", live["itemId"]}, ids
    assert {r["event_id"] for r in store.rows("rejected_events", columns="event_id")} == {"r-last-month"}
    assert worker.metric("powehi_worker_retention_partitions_dropped_total") == 3.0
    # Later rounds (one a second) find nothing more to drop.
    time.sleep(3)
    assert worker.metric("powehi_worker_retention_partitions_dropped_total") == 3.0
    assert store.count("events") == 2


def test_without_a_retention_nothing_is_dropped(names, start_gateway, start_worker, store):
    db = names.database
    worker_command(db, "migrate")
    seed(db, datetime(2020, 1, 15, tzinfo=timezone.utc), "ancient")
    gateway = start_gateway()
    worker = start_worker()
    live = event(gateway.creds.client_id)
    assert post(gateway, {"events": [live]}).status_code == 200
    store.wait_for_ids({live["itemId"]}, timeout=60)
    assert all("202001" in ms for ms in months(db).values()), months(db)
    assert worker.metric("powehi_worker_retention_partitions_dropped_total") in (None, 0.0)
