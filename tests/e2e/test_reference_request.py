"""The vendor document's request works exactly as written (reference/events-tracking-api.md),
and the event it sends is what an analyst then reads in ClickHouse."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import pytest

from e2e_support import VIEW_SCHEMA, data_source, event, post, sql_str, wait_until

# The `-d` body of the reference curl, verbatim; the two ${…} are interpolated by the shell,
# unquoted: a numeric id gives a JSON number, otherwise the user quotes it.
REFERENCE_BODY = """{"events": [
              {
                  "eventType": "view",
                  "sessionId": ${CLIENT_UNIQUE_SESSION_ID},
                  "properties": {},
                  "scope": ${YOUR_DATA_SOURCE_ID},
                  "timeStamp": "2021-10-15T18:49:00+07:00",
                  "source": { "itemId": "_", "itemType": "_" },
                  "target": { "itemId": "_", "itemType": "_" }
              }
          ]}"""

EVENT_COLUMNS = (
    "event_id, scope, event_type, session_id, profile_id, toString(event_time) AS event_time_text, "
    "toUnixTimestamp(event_time) AS event_time_s, event_time_ms, toString(sent_at) AS sent_at_text, sent_at_ms, "
    "toUnixTimestamp(received_at) AS received_at_s, received_at_ms, properties, "
    "source_id, source_type, target_id, target_type"
)


def epoch_ms(iso: str) -> int:
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(dt.timestamp() * 1000)


def reference_case(kind: str) -> tuple[str, str, str, str]:
    """(data source id, write key, body, sessionId as stored) for one way of filling in the curl."""
    if kind == "numeric-session":
        # As in the curl: both placeholders interpolated unquoted, so both are JSON numbers.
        ds_id = str(100_000_000 + uuid.uuid4().int % 900_000_000)
        session = str(1_000_000_000_000 + uuid.uuid4().int % 9_000_000_000_000)
        body = REFERENCE_BODY.replace("${CLIENT_UNIQUE_SESSION_ID}", session).replace("${YOUR_DATA_SOURCE_ID}", ds_id)
        return ds_id, f"key-{uuid.uuid4().hex}", body, session
    # The demo data source of `make run`, and a UUID session: both quoted.
    session = str(uuid.uuid4())
    body = REFERENCE_BODY.replace("${CLIENT_UNIQUE_SESSION_ID}", f'"{session}"').replace(
        "${YOUR_DATA_SOURCE_ID}", '"demo"'
    )
    return "demo", "demo-write-key", body, session


@pytest.mark.parametrize("path", ["/powehi/smile", "/smile"])
@pytest.mark.parametrize("kind", ["numeric-session", "uuid-session"])
def test_reference_curl_request_is_accepted_and_its_event_stored(kind, path, start_gateway, start_worker, store):
    """The documented curl answers 200 {"updated": 0} and its event reaches `events` as sent."""
    ds_id, key, body, session = reference_case(kind)
    gateway = start_gateway(
        bootstrap={"dataSources": [data_source(ds_id, [key])], "eventSchemas": [VIEW_SCHEMA]}
    )
    start_worker()

    before_ms = time.time() * 1000
    resp = post(
        gateway,
        body.encode(),
        path=path,
        creds=None,
        content_type=None,
        headers={"X-Client-Id": ds_id, "X-Client-Access-Token": key, "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["updated"] == 0, answer
    assert answer["accepted"] == 1, answer
    assert answer.get("errors", []) == [], answer

    where = f"session_id = {sql_str(session)}"
    rows = wait_until(lambda: store.rows("events", where, EVENT_COLUMNS), 15, what="the reference event in events")
    after_ms = time.time() * 1000
    assert len(rows) == 1, rows
    row = rows[0]
    expected = {
        "scope": ds_id,
        "event_type": "view",
        "session_id": session,
        "profile_id": f"anon:{ds_id}:{session}",  # no profileId: the session's anonymous profile
        "event_time_text": "2021-10-15 11:49:00",
        "event_time_ms": 1634298540000,
        "sent_at_ms": None,  # no sendAt was sent
        "source_id": "_",
        "source_type": "_",
        "target_id": "_",
        "target_type": "_",
    }
    actual = {k: row[k] for k in expected}
    assert actual == expected, f"stored row differs: {row}"
    assert row["event_id"], row
    assert json.loads(row["properties"]) == {}
    assert before_ms - 2000 <= row["received_at_ms"] <= after_ms + 2000, (before_ms, row, after_ms)
    assert row["received_at_s"] == row["received_at_ms"] // 1000
    assert store.count("rejected_events") == 0, store.rows("rejected_events")


# (timeStamp, sendAt or None): what the stored row must say about them.
TIME_CASES = [
    ("2021-10-15T18:49:00.123+07:00", None),
    ("2021-10-15T11:49:00.5Z", None),
    ("2021-10-15T11:49:00", None),  # no offset: UTC
    # Sent half an hour after it happened (sendAt before timeStamp is refused: time_in_future).
    ("2021-10-15T11:49:00.007-02:30", "2021-10-15T21:49:01.456+07:00"),
    ("1970-01-01T00:00:00Z", None),  # the range's ends are valid
    ("2105-12-31T23:59:59.999Z", "2105-12-31T23:59:59.999Z"),
]


def test_event_and_send_times_keep_milliseconds_in_utc(pipeline, store):
    """timeStamp/sendAt are stored in UTC with their milliseconds; a time without offset is UTC."""
    gateway, _ = pipeline
    scope = gateway.creds.client_id
    events = []
    for ts, sent in TIME_CASES:
        ev = event(scope, timeStamp=ts)
        if sent is not None:
            ev["sendAt"] = sent
        events.append(ev)

    resp = post(gateway, {"events": events})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == len(events), resp.text

    ids = {ev["itemId"] for ev in events}
    store.wait_for_ids(ids, timeout=15)
    rows = {r["event_id"]: r for r in store.rows("events", columns=EVENT_COLUMNS)}
    for ev, (ts, sent) in zip(events, TIME_CASES, strict=True):
        row = rows[ev["itemId"]]
        assert row["event_time_ms"] == epoch_ms(ts), (ts, row)
        assert row["event_time_s"] == epoch_ms(ts) // 1000, (ts, row)
        if sent is None:
            assert row["sent_at_ms"] is None, (ts, row)
        else:
            assert row["sent_at_ms"] == epoch_ms(sent), (sent, row)
    first = rows[events[0]["itemId"]]
    assert first["event_time_text"] == "2021-10-15 11:49:00" and first["event_time_ms"] % 1000 == 123, first
    with_send_at = rows[events[3]["itemId"]]
    assert with_send_at["sent_at_text"] == "2021-10-15 14:49:01", with_send_at


def test_optional_fields_are_stored(pipeline, store):
    """itemId becomes event_id, profileId is kept, a numeric sessionId is stored as its digits."""
    gateway, _ = pipeline
    scope = gateway.creds.client_id
    item_id = f"producer-key-{uuid.uuid4().hex}"
    events = [
        event(scope, itemId=item_id, profileId="user-42", sessionId=987654321012,
              source={"itemId": "page-1", "itemType": "page"}, target={"itemId": "btn-9", "itemType": "button"}),
    ]
    resp = post(gateway, {"events": events})
    assert resp.status_code == 200, resp.text

    store.wait_for_ids({item_id}, timeout=15)
    (row,) = store.rows("events", f"event_id = {sql_str(item_id)}", EVENT_COLUMNS)
    assert row["profile_id"] == "user-42"
    assert row["session_id"] == "987654321012"
    assert (row["source_id"], row["source_type"]) == ("page-1", "page")
    assert (row["target_id"], row["target_type"]) == ("btn-9", "button")
