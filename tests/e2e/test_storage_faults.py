"""ClickHouse faults that are not an outage: a profile view whose push fails, a row ClickHouse
refuses, a minute of refusals; and a schema registered right before its events. Counted with
events that carry no itemId (tags in a declared property, see e2e_support)."""

from __future__ import annotations

import time

import requests

from admin_support import DEFAULT_ADMIN_TOKEN
from e2e_support import (
    TAG_SQL,
    TagStream,
    assert_profile_counts_exact,
    assert_tags_exactly_once,
    ch_exec,
    ch_query,
    data_source,
    post,
    readers_snapshot,
    tick_bootstrap,
    tick_event,
    wait_group_caught_up,
    wait_tags_stored,
    wait_until,
    worker_command,
)

REBUILD_TIMEOUT_S = 120


def rebuild_profiles(names, *args: str) -> None:
    """`event-worker rebuild-profiles` against the test's database."""
    worker_command(names.database, "rebuild-profiles", *args, timeout=REBUILD_TIMEOUT_S)


def profiles_only(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot.items() if k.startswith("profile_") or k == "sessions"}


def test_a_failed_view_push_leaves_profiles_equal_to_a_rebuild(names, start_gateway, start_worker):
    """A profile table detached while batches are written: the feed's view push fails after
    `events` took the rows; the worker waits (blocked, clickhouse_unavailable) and feeds them
    once the table is back. The profiles then equal a from-scratch rebuild from `events`, and
    the rebuild is idempotent (running it again changes nothing)."""
    db = names.database
    gateway = start_gateway(bootstrap=tick_bootstrap(names))
    worker = start_worker()
    stream = TagStream(gateway, events_per_request=20, interval=0.05).start()
    try:
        stream.wait_acked(200, timeout=60)
        ch_exec(f"DETACH TABLE {db}.profile_properties")
        try:
            wait_until(
                lambda: worker.metric("powehi_worker_blocked", reason="clickhouse_unavailable") == 1,
                60, what="the worker blocked on the missing profile table",
            )
            during = len(stream.acked)
            stream.wait_acked(during + 100, timeout=60)  # the gateway keeps acknowledging
            time.sleep(5)  # several failed feeds, with backoff
            assert worker.metric("powehi_worker_paused") == 1
        finally:
            ch_exec(f"ATTACH TABLE {db}.profile_properties")
        wait_until(lambda: worker.metric("powehi_worker_paused") == 0, 60, what="the worker resumed")
        stream.wait_acked(len(stream.acked) + 100, timeout=60)
    finally:
        stream.stop()
        stream.join()
    wait_tags_stored(names, db, stream.acked)
    assert_tags_exactly_once(db, stream.acked)
    assert_profile_counts_exact(db)
    served = profiles_only(readers_snapshot(db))
    assert served["profile_properties"], "the tick schema maps tag to a profile property"

    rebuild_profiles(names, "--truncate")
    assert profiles_only(readers_snapshot(db)) == served, "profiles differ from a rebuild from events"
    rebuild_profiles(names)
    assert profiles_only(readers_snapshot(db)) == served, "a second rebuild changed the profiles"


def test_a_row_clickhouse_refuses_stalls_nothing(names, start_gateway, start_worker):
    """A view of `events` that throws for one session's events: a deterministic refusal of
    those rows, as an analyst's materialized view or a bad value would give. Under load the
    worker finds the refused rows alone (the rest of each batch is written), sees that the
    table took them before the view refused (ClickHouse writes the part first and does not
    take it back), keeps them as they are, and no partition stalls: every acknowledged event,
    the refused ones included, is stored once."""
    db = names.database
    gateway = start_gateway(bootstrap=tick_bootstrap(names))
    worker = start_worker()
    ch_exec(
        f"CREATE MATERIALIZED VIEW {db}.refuse_bad_rows ENGINE = Null AS "
        f"SELECT throwIf(session_id = 'refused-session') AS refused FROM {db}.events"
    )
    stream = TagStream(gateway, events_per_request=20, interval=0.05).start()
    bad = {f"bad-{i}" for i in range(3)}
    try:
        stream.wait_acked(100, timeout=60)
        for tag in sorted(bad):
            resp = post(gateway, {"events": [tick_event(gateway.creds.client_id, tag, "refused-session")]})
            assert resp.status_code == 200, resp.text
            stream.wait_acked(len(stream.acked) + 60, timeout=60)
    finally:
        stream.stop()
        stream.join()
    acked = stream.acked | bad
    wait_tags_stored(names, db, acked)
    assert_tags_exactly_once(db, acked)
    assert worker.metric("powehi_worker_view_refused_total") == len(bad)
    assert (worker.metric("powehi_worker_rows_refused_total") or 0) == 0
    assert worker.metric("powehi_worker_paused") == 0
    assert_profile_counts_exact(db)


def test_a_minute_of_refusals_stalls_nothing_and_loses_nothing(names, start_gateway, start_worker):
    """Every insert into `events` refused for 60 s (a view throwing for every row, as a broken
    server-side object would): the worker backs off exponentially and says why, rejects
    nothing (the rows are not at fault: nothing of their batch could be written), and stores
    every acknowledged event once when the refusals stop."""
    db = names.database
    gateway = start_gateway(bootstrap=tick_bootstrap(names))
    worker = start_worker()
    stream = TagStream(gateway, events_per_request=10, interval=0.1).start()
    try:
        stream.wait_acked(100, timeout=60)
        ch_exec(f"CREATE MATERIALIZED VIEW {db}.refuse_all ENGINE = Null AS SELECT throwIf(kafka_offset >= 0) AS refused FROM {db}.events")
        started = time.monotonic()
        try:
            wait_until(
                lambda: worker.metric("powehi_worker_blocked", reason="clickhouse_refused") == 1,
                60, what="the worker blocked on refusals",
            )
            ready = worker.get("/readyz")
            assert ready.status_code == 503 and "refused" in ready.text, ready.text
            errors_before = worker.metric("powehi_worker_clickhouse_errors_total") or 0
            time.sleep(max(0.0, 60 - (time.monotonic() - started)))
            errors = (worker.metric("powehi_worker_clickhouse_errors_total") or 0) - errors_before
            # Backoff doubles to a 5 s cap: a few attempts a minute, not one per 500 ms.
            assert errors <= 30, f"{errors} failed attempts in a minute: no backoff"
        finally:
            ch_exec(f"DROP TABLE {db}.refuse_all")
        wait_until(lambda: worker.metric("powehi_worker_paused") == 0, 60, what="the worker resumed")
        stream.wait_acked(len(stream.acked) + 50, timeout=60)
    finally:
        stream.stop()
        stream.join()
    wait_tags_stored(names, db, stream.acked)
    assert_tags_exactly_once(db, stream.acked)
    assert int(ch_query(f"SELECT count() AS n FROM {db}.event_log WHERE status = 'rejected'")[0]["n"]) == 0
    assert (worker.metric("powehi_worker_rows_refused_total") or 0) == 0
    assert_profile_counts_exact(db)


def test_events_sent_right_after_a_schema_put_are_never_judged_by_an_older_schema(
    names, start_gateway, start_worker
):
    """PUT a new event type through one gateway and, as soon as it answers, send 1,000 events of
    that type through another gateway: none is rejected as unknown_event_type, whichever
    worker decodes them and however far its config follower lags."""
    db = names.database
    bootstrap = {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": []}
    admin_gateway = start_gateway(bootstrap=bootstrap)
    other_gateway = start_gateway(bootstrap=bootstrap)
    start_worker()
    start_worker(wait="ready")
    scope = names.client_id
    for round_ in range(5):
        event_type = f"fresh_{round_}"
        resp = requests.put(
            f"http://{admin_gateway.env['POWEHI_ADMIN_ADDR']}/v1/schemas/{event_type}",
            headers={"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"},
            json={"properties": [{"name": "tag", "type": "string", "required": True}]},
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        events = [
            {**tick_event(scope, f"{event_type}-{i}", f"s-{i % 13}"), "eventType": event_type}
            for i in range(200)
        ]
        # The other gateway may not have applied the schema yet: it does not judge types,
        # it stamps its own config position; the worker must still use the new schema.
        resp = post(other_gateway, {"events": events})
        assert resp.status_code == 200, resp.text
    acked = {f"fresh_{r}-{i}" for r in range(5) for i in range(200)}
    wait_tags_stored(names, db, acked)
    assert_tags_exactly_once(db, acked)
    unknown = ch_query(f"SELECT event_type, reasons FROM {db}.event_log WHERE status = 'rejected' LIMIT 5")
    assert not unknown, f"events rejected although their schema was registered first: {unknown}"
    assert int(ch_query(f"SELECT count() AS n FROM {db}.events FINAL WHERE {TAG_SQL} != ''")[0]["n"]) == 1000


def test_an_event_is_judged_by_the_schema_its_gateway_knew_however_late_it_is_decoded(
    names, start_gateway, start_worker
):
    """Events sent while schema `flip` v1 holds, then v2 (which requires a new property)
    registered, then the events decoded: they are judged by v1, the version their gateway had
    applied, not by whatever the worker knows when it decodes them. That is what makes two
    workers that decode one record at different times (a frozen one and its partition's new
    owner) store the same verdict, which storage collapses; judged by the latest schema, the
    same record could be stored once accepted and once rejected."""
    db = names.database
    v1 = {"eventType": "flip", "properties": [{"name": "tag", "type": "string", "required": True}]}
    bootstrap = {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": [v1]}
    gateway = start_gateway(bootstrap=bootstrap)
    scope = names.client_id

    def flip_events(prefix: str) -> list[dict]:
        return [
            {"eventType": "flip", "sessionId": f"{prefix}-s{i % 7}", "scope": scope,
             "timeStamp": "2026-01-01T00:00:00Z", "properties": {"tag": f"{prefix}-{i}"}}
            for i in range(100)
        ]

    # No worker yet: these wait in Kafka until after v2 is registered.
    resp = post(gateway, {"events": flip_events("before")})
    assert resp.status_code == 200, resp.text
    resp = requests.put(
        f"http://{gateway.env['POWEHI_ADMIN_ADDR']}/v1/schemas/flip",
        headers={"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"},
        json={"properties": [{"name": "tag", "type": "string", "required": True},
                             {"name": "amount", "type": "integer", "required": True}]},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    resp = post(gateway, {"events": flip_events("after")})
    assert resp.status_code == 200, resp.text

    start_worker()
    wait_group_caught_up(names.group, names.topic)
    verdicts = ch_query(
        # A rejected event keeps its raw JSON, an accepted one its declared properties.
        "SELECT splitByChar('-', extract(if(status = 'accepted', properties, raw), '\"tag\": *\"([^\"]*)\"'))[1] AS sent, "
        f"status, schema_version, count() AS n FROM {db}.event_log WHERE event_type = 'flip' "
        "GROUP BY sent, status, schema_version ORDER BY sent, status"
    )
    got = {(r["sent"], r["status"], int(r["schema_version"])): int(r["n"]) for r in verdicts}
    assert got == {("after", "rejected", 0): 100, ("before", "accepted", 1): 100}, verdicts
    reasons = ch_query(f"SELECT DISTINCT reasons FROM {db}.event_log WHERE event_type = 'flip' AND status = 'rejected'")
    assert len(reasons) == 1 and '"missing_property"' in reasons[0]["reasons"] and "amount" in reasons[0]["reasons"], reasons
