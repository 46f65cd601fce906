"""The event log (issue 3): the ClickHouse view `event_log` and the admin endpoint
GET /v1/datasources/{id}/events — filters (event type, session, profile, status, time range
on received time, from inclusive / to exclusive), newest first, only the data source's own
events, and cursor pagination that neither skips nor repeats rows while events keep arriving."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

from admin_support import (  # noqa: F401 - fixtures
    admin_stack,
    as_json,
    assert_newest_first,
    bootstrap_with,
    config_topic,
    iso_ms,
    page_all,
    reason_pairs,
    time_ms,
)
from e2e_support import Creds, EventStream, ch_query, data_source, event, post, sql_str, wait_until

PURCHASE = {
    "eventType": "purchase",
    "properties": [
        {"name": "sku", "type": "string", "required": True},
        {"name": "qty", "type": "integer", "required": True},
    ],
}
EVENT_FIELDS = {
    "eventId",
    "status",
    "eventType",
    "sessionId",
    "profileId",
    "eventTime",
    "receivedAt",
    "properties",
    "reasons",
    "raw",
    "schemaVersion",
}
VIEW_COLUMNS = {
    "event_id",
    "scope",
    "event_type",
    "session_id",
    "profile_id",
    "status",
    "received_at",
    "received_at_ms",
    "reasons",
    "raw",
    "properties",
    "schema_version",
}


def item_key(ev: dict) -> str:
    """The itemId an endpoint event was sent with (its eventId, or else read from its raw event)."""
    raw = as_json(ev.get("raw"))
    if isinstance(raw, dict) and raw.get("itemId"):
        return raw["itemId"]
    return ev["eventId"]


def keys(events: list[dict]) -> list[str]:
    return [item_key(e) for e in events]


def test_event_log_filters_order_and_view(names, store, admin_stack):
    scope = names.client_id
    other_id, other_key = f"other-{names.hex}", f"key-{uuid.uuid4().hex}"
    stack = admin_stack(
        bootstrap=bootstrap_with(
            names, data_source(other_id, [other_key]), schemas=[{"eventType": "view", "properties": []}, PURCHASE]
        )
    )
    admin, gateway = stack.admin, stack.gateway
    other = Creds(other_id, other_key)
    sess_a, sess_b, profile = f"sa-{names.hex}", f"sb-{names.hex}", f"p-{names.hex}"
    # The identified event is alone in its session: naming a profileId merges the session's
    # anonymous profile, and the profile filter may then (rightly) return the whole session.
    sess_p = f"sp-{names.hex}"

    def purchase(session: str, ok: bool) -> dict:
        props = {"sku": "A1", "qty": 1, "junk": True} if ok else {"qty": 1}
        return event(scope, eventType="purchase", sessionId=session, properties=props)

    batch1 = {
        "view_a1": event(scope, sessionId=sess_a, properties={"x": 1}),
        "view_a2": event(scope, sessionId=sess_a),
        "view_p": event(scope, sessionId=sess_p, profileId=profile),
        "view_a3": event(scope, sessionId=sess_a),
        "buy_a_ok": purchase(sess_a, True),
        "buy_a_bad": purchase(sess_a, False),
        "view_b1": event(scope, sessionId=sess_b),
        "view_b2": event(scope, sessionId=sess_b),
        "refused_b": event(scope, sessionId=sess_b, timeStamp="yesterday"),  # refused by the gateway
    }
    resp = post(gateway, {"events": list(batch1.values())})
    assert resp.status_code == 200, resp.text
    assert [e["index"] for e in resp.json().get("errors", [])] == [8], resp.text
    time.sleep(0.05)
    t_mid = int(time.time() * 1000)
    time.sleep(0.3)
    batch2 = {
        "view_a4": event(scope, sessionId=sess_a),
        "view_a5": event(scope, sessionId=sess_a),
        "buy_b_bad": purchase(sess_b, False),
    }
    resp = post(gateway, {"events": list(batch2.values())})
    assert resp.status_code == 200, resp.text
    theirs = [event(other_id, sessionId=sess_a), event(other_id, sessionId=sess_p, profileId=profile)]
    resp = post(gateway, {"events": theirs}, creds=other)
    assert resp.status_code == 200, resp.text

    sent = {**batch1, **batch2}
    rejected_labels = {"buy_a_bad", "refused_b", "buy_b_bad"}
    key_of = {label: ev["itemId"] for label, ev in sent.items()}
    label_of = {v: k for k, v in key_of.items()}

    def visible():
        return len(admin.events_page(scope, limit=1000)["events"]) >= len(sent) and len(
            admin.events_page(other_id, limit=1000)["events"]
        ) >= len(theirs)

    wait_until(visible, 60, interval=0.5, what="every event in the event log")

    def labels(**params) -> list[str]:
        evs = page_all(admin, scope, **params)
        assert_newest_first(evs)
        return [label_of.get(k, f"foreign:{k}") for k in keys(evs)]

    everything = page_all(admin, scope, limit=1000)
    assert sorted(label_of.get(k, k) for k in keys(everything)) == sorted(sent), keys(everything)
    assert_newest_first(everything)
    for ev in everything:
        assert EVENT_FIELDS <= set(ev), f"event-log entry without {EVENT_FIELDS - set(ev)}: {ev}"
    by_label = {label_of[item_key(e)]: e for e in everything}
    for label, ev in by_label.items():
        want = "rejected" if label in rejected_labels else "accepted"
        assert ev["status"] == want, (label, ev)
        assert ev["eventType"] == sent[label]["eventType"] and ev["sessionId"] == sent[label]["sessionId"], ev
        if want == "rejected":
            assert reason_pairs(ev["reasons"]), ev
    assert by_label["view_p"]["profileId"] == profile
    assert as_json(by_label["buy_a_ok"]["properties"]) == {"sku": "A1", "qty": 1}
    assert reason_pairs(by_label["buy_a_bad"]["reasons"]) == [("missing_property", "$.properties.sku")]
    assert "invalid_timestamp" in [c for c, _ in reason_pairs(by_label["refused_b"]["reasons"])]
    assert as_json(by_label["refused_b"]["raw"]) == sent["refused_b"]

    # Newest first: batch 2 entirely before batch 1.
    order = [label_of[item_key(e)] for e in everything]
    assert set(order[: len(batch2)]) == set(batch2), order

    # Filters, alone and together.
    assert sorted(labels(eventType="purchase")) == ["buy_a_bad", "buy_a_ok", "buy_b_bad"]
    assert sorted(labels(sessionId=sess_a)) == sorted(k for k, ev in sent.items() if ev["sessionId"] == sess_a)
    assert labels(profileId=profile) == ["view_p"]
    assert sorted(labels(status="rejected")) == sorted(rejected_labels)
    assert sorted(labels(status="accepted")) == sorted(set(sent) - rejected_labels)
    assert labels(sessionId=sess_b, status="rejected", eventType="purchase") == ["buy_b_bad"]
    assert labels(sessionId=sess_b, status="accepted", eventType="purchase") == []
    assert labels(eventType="nosuch") == []
    assert labels(sessionId=f"{sess_a}x") == []

    # Time range on received time: from inclusive, to exclusive.
    assert sorted(labels(**{"from": iso_ms(t_mid)})) == sorted(batch2)
    assert sorted(labels(to=iso_ms(t_mid))) == sorted(batch1)
    assert labels(**{"from": iso_ms(t_mid), "to": iso_ms(t_mid)}) == []
    plus7 = datetime.fromtimestamp(t_mid / 1000, tz=timezone(timedelta(hours=7))).isoformat(timespec="milliseconds")
    assert sorted(labels(**{"from": plus7})) == sorted(batch2), f"from={plus7} (the same instant, +07:00)"
    pivot = by_label["view_a4"]
    p_ms = time_ms(pivot["receivedAt"])
    same_ms = [label_of[item_key(e)] for e in everything if time_ms(e["receivedAt"]) == p_ms]
    at_or_after = [label_of[item_key(e)] for e in everything if time_ms(e["receivedAt"]) >= p_ms]
    before = [label_of[item_key(e)] for e in everything if time_ms(e["receivedAt"]) < p_ms]
    assert "view_a4" in same_ms
    assert sorted(labels(**{"from": iso_ms(p_ms)})) == sorted(at_or_after), "from must include its instant"
    assert sorted(labels(to=iso_ms(p_ms))) == sorted(before), "to must exclude its instant"
    assert sorted(labels(**{"from": iso_ms(p_ms), "to": iso_ms(p_ms + 1)})) == sorted(same_ms)
    assert sorted(labels(sessionId=sess_a, **{"from": iso_ms(t_mid)})) == ["view_a4", "view_a5"]

    # Only the data source's own events, also when a session id is shared.
    theirs_log = page_all(admin, other_id)
    assert sorted(keys(theirs_log)) == sorted(e["itemId"] for e in theirs)
    assert keys(page_all(admin, other_id, sessionId=sess_a)) == [theirs[0]["itemId"]]
    assert keys(page_all(admin, other_id, sessionId=sess_p)) == [theirs[1]["itemId"]]
    assert keys(page_all(admin, other_id, profileId=profile)) == [theirs[1]["itemId"]]

    # The view analysts query says the same.
    columns = {
        r["name"]
        for r in ch_query(
            f"SELECT name FROM system.columns WHERE database = {sql_str(store.db)} AND table = 'event_log'"
        )
    }
    assert VIEW_COLUMNS <= columns, f"event_log view lacks {VIEW_COLUMNS - columns}"
    rows = store.rows("event_log", f"scope = {sql_str(scope)}", "event_id, status, raw, reasons, schema_version")
    status_by_key = {}
    for r in rows:
        raw = as_json(r["raw"]) if r["raw"] else None
        k = raw["itemId"] if isinstance(raw, dict) and raw.get("itemId") else r["event_id"]
        assert k not in status_by_key, f"{k} twice in event_log"
        status_by_key[k] = r["status"]
    assert {label_of.get(k, k): s for k, s in status_by_key.items()} == {
        label: ("rejected" if label in rejected_labels else "accepted") for label in sent
    }
    assert store.count("event_log", f"scope = {sql_str(other_id)}") == len(theirs)

    # Times keep millisecond precision (DESIGN): eventTime is the event's timeStamp, to the ms,
    # for accepted and worker-rejected events alike.
    imprecise = {
        label: (sent[label]["timeStamp"], ev["eventTime"])
        for label, ev in by_label.items()
        if label != "refused_b" and time_ms(ev["eventTime"]) != time_ms(sent[label]["timeStamp"])
    }
    assert not imprecise, f"eventTime differs from the timeStamp sent (label: (sent, answered)): {imprecise}"
    view_ms = {
        r["event_id"]: int(r["event_time_ms"])
        for r in store.rows("event_log", f"scope = {sql_str(scope)}", "event_id, event_time_ms")
    }
    imprecise = {
        label: (sent[label]["timeStamp"], view_ms.get(key_of[label]))
        for label in sent
        if label != "refused_b" and view_ms.get(key_of[label]) != time_ms(sent[label]["timeStamp"])
    }
    assert not imprecise, f"event_log.event_time_ms differs from the timeStamp sent: {imprecise}"


def test_pagination_over_a_growing_stream_returns_each_event_exactly_once(names, store, admin_stack):
    scope = names.client_id
    stack = admin_stack()
    admin, gateway = stack.admin, stack.gateway

    initial: list[str] = []
    for r in range(6):
        evs = [event(scope, sessionId=f"pg-{names.hex}-{(r * 50 + i) % 17}") for i in range(50)]
        resp = post(gateway, {"events": evs})
        assert resp.status_code == 200, resp.text
        initial += [e["itemId"] for e in evs]
    store.wait_for_ids(set(initial), 90)
    wait_until(
        lambda: len(admin.events_page(scope, limit=1000)["events"]) >= len(initial),
        30,
        interval=0.5,
        what="the 300 events through the endpoint",
    )

    stream = EventStream(gateway, requests_total=100_000, events_per_request=5, threads=1, interval=0.05, max_seconds=180)
    stream.start()
    growth = {}

    def stream_rows() -> int:
        return store.count("events", f"scope = {sql_str(scope)} AND startsWith(event_id, {sql_str(stream.prefix)})")

    def on_page(n: int, page: dict) -> None:
        assert len(page["events"]) <= 37, f"page {n} holds {len(page['events'])} events with limit=37"
        if n == 0:
            growth["first"] = stream_rows()
        if n == 3:
            # Make sure the log really grows while we page.
            wait_until(lambda: stream_rows() > growth["first"], 60, interval=0.2, what="the stream to reach ClickHouse")
        if page["nextCursor"] is not None:
            assert len(page["events"]) == 37, f"page {n} is short ({len(page['events'])}) but has a nextCursor"

    try:
        paged = page_all(admin, scope, limit=37, pause=0.15, on_page=on_page, max_pages=100)
        growth["last"] = stream_rows()
    finally:
        stream.stop()
        stream.join()

    ids = [e["eventId"] for e in paged]
    dups = {i: n for i, n in Counter(ids).items() if n > 1}
    assert not dups, f"{len(dups)} events returned twice while paging, e.g. {list(dups)[:5]}"
    missing = set(initial) - set(ids)
    assert not missing, f"{len(missing)} of the {len(initial)} initial events skipped while paging, e.g. {sorted(missing)[:5]}"
    assert_newest_first(paged)
    assert growth["last"] > growth["first"], growth
    assert stream.acked, f"the stream posted nothing: {stream.statuses}"
    print(f"paged {len(paged)} events over {len(paged) // 37 + 1} pages; stream rows {growth}")

    # After the stream: the newest page starts with the stream's events, default limit 100.
    wait_until(lambda: stream_rows() >= len(stream.acked), 60, interval=0.5, what="the stream's events stored")
    first = admin.events_page(scope)
    assert len(first["events"]) == 100 and first["nextCursor"], f"default limit: {len(first['events'])} events"
    assert first["events"][0]["eventId"].startswith(stream.prefix), first["events"][0]
    full = admin.events_page(scope, limit=1000)
    assert len(full["events"]) == min(1000, len(initial) + len(stream.acked)), len(full["events"])
    one = admin.events_page(scope, limit=1)
    assert len(one["events"]) == 1 and one["nextCursor"], one
    second = admin.events_page(scope, limit=1, cursor=one["nextCursor"])
    assert [e["eventId"] for e in second["events"]] == [full["events"][1]["eventId"]], (second, full["events"][:2])

    # Paging with a filter: the accepted events of one session, each once.
    sess = f"pg-{names.hex}-3"
    expected = {e["event_id"] for e in store.rows("events", f"session_id = {sql_str(sess)}", "event_id")}
    got = [e["eventId"] for e in page_all(admin, scope, sessionId=sess, status="accepted", limit=5)]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got)), (len(got), len(expected))
