"""Bad requests get a specific status and error code, and write nothing; bad events in a batch
are refused one by one, recorded as rejected, and do not stop the good ones."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from e2e_support import (
    VIEW_SCHEMA,
    Creds,
    assert_error,
    data_source,
    event,
    post,
    retry_after_seconds,
    sql_str,
    wait_until,
)

MAX_BODY_BYTES = 1_048_576  # the gateway's documented default
MAX_EVENT_BYTES = 32_768  # the gateway's documented default


@pytest.fixture
def errors_pipeline(names, start_gateway, start_worker):
    """One partition, so Kafka order is request order: a marker stored after the error
    requests proves that nothing they might have written is still on its way."""
    ds = names.client_id
    keys = {
        "main": Creds(ds, names.write_key),
        "main-rotated": Creds(ds, f"rotated-{uuid.uuid4().hex}"),
        "disabled": Creds(f"{ds}-off", f"off-{uuid.uuid4().hex}"),
        "limited": Creds(f"{ds}-slow", f"slow-{uuid.uuid4().hex}"),
        "other": Creds(f"{ds}-other", f"other-{uuid.uuid4().hex}"),
    }
    bootstrap = {
        "dataSources": [
            data_source(ds, [keys["main"].token, keys["main-rotated"].token]),
            data_source(keys["disabled"].client_id, [keys["disabled"].token], enabled=False),
            data_source(keys["limited"].client_id, [keys["limited"].token], maxEventsPerSecond=1),
            data_source(keys["other"].client_id, [keys["other"].token]),
        ],
        "eventSchemas": [VIEW_SCHEMA],
    }
    gateway = start_gateway(bootstrap=bootstrap, POWEHI_RAW_TOPIC_PARTITIONS=1)
    worker = start_worker()
    return gateway, worker, keys


def err_event(scope: str, case: str, **fields) -> dict:
    """An event of an error request: findable by its session id and itemId prefix `err-`."""
    return event(scope, sessionId=f"err-{case}", itemId=f"err-{case}-{uuid.uuid4().hex[:8]}", **fields)


def wait_for_markers(gateway, store, scope: str) -> None:
    """Post one accepted and one refused event and wait until both are stored.

    With a single partition, everything produced before them has been processed by then.
    """
    good = event(scope, sessionId="marker")
    refused = event(f"{scope}-not-mine", sessionId="marker")  # scope_mismatch
    resp = post(gateway, {"events": [good, refused]})
    assert resp.status_code == 200, resp.text
    store.wait_for_ids({good["itemId"]}, timeout=30)
    wait_until(
        lambda: store.count("rejected_events", f"position(raw, {sql_str(refused['itemId'])}) > 0") > 0,
        30,
        what="the refused marker in rejected_events",
    )


def assert_nothing_written_by_error_requests(store) -> None:
    leaked_events = store.rows("events", "session_id LIKE 'err-%' OR event_id LIKE 'err-%'")
    leaked_rejected = store.rows("rejected_events", "session_id LIKE 'err-%' OR position(raw, 'err-') > 0")
    assert not leaked_events, f"refused requests wrote to events: {leaked_events[:3]}"
    assert not leaked_rejected, f"refused requests wrote to rejected_events: {leaked_rejected[:3]}"


def oversized_body(scope: str) -> bytes:
    """A valid batch of events under the per-event limit, over the body limit as a whole."""
    events = []
    size = 0
    while size <= MAX_BODY_BYTES + 10_000:
        ev = err_event(scope, "too-large", properties={"pad": "x" * 30_000})
        events.append(ev)
        size += len(json.dumps(ev))
    return json.dumps({"events": events}).encode()


def test_whole_request_errors_answer_their_code_and_write_nothing(errors_pipeline, store):
    """Each whole-request error has its status, code and JSON body, and stores no row."""
    gateway, _, keys = errors_pipeline
    main = keys["main"]
    scope = main.client_id
    one = lambda case: {"events": [err_event(scope, case)]}  # noqa: E731
    big = oversized_body(scope)

    def chunks(data: bytes, size: int = 65_536):
        for i in range(0, len(data), size):
            yield data[i : i + size]

    other, disabled = keys["other"], keys["disabled"]
    cases = [
        # (what, post kwargs, status, code)
        ("truncated JSON", dict(body=b'{"events": [{"eventType": "view", "sessionId": "err-malformed"'),
         400, "malformed_json"),
        ("not JSON at all", dict(body=b"err-garbage"), 400, "malformed_json"),
        ("body is an array", dict(body=[err_event(scope, "array")]), 400, "invalid_body"),
        ("no events key", dict(body={"evts": [err_event(scope, "no-events")]}), 400, "invalid_body"),
        ("events is an object", dict(body={"events": err_event(scope, "events-object")}), 400, "invalid_body"),
        ("empty events array", dict(body={"events": []}), 400, "empty_batch"),
        ("no credential header", dict(body=one("no-creds"), creds=None), 401, "missing_credentials"),
        ("no token header", dict(body=one("no-token"), creds=None, headers={"X-Client-ID": scope}),
         401, "missing_credentials"),
        ("no client id header", dict(body=one("no-id"), creds=None, headers={"X-Client-Access-Token": main.token}),
         401, "missing_credentials"),
        ("unknown client id", dict(body=one("unknown-id"), creds=Creds(f"{scope}-nobody", main.token)),
         401, "invalid_credentials"),
        ("wrong token", dict(body=one("wrong-token"), creds=Creds(scope, "not-the-key")), 401, "invalid_credentials"),
        ("another source's token", dict(body=one("other-token"), creds=Creds(scope, other.token)),
         401, "invalid_credentials"),
        ("disabled data source", dict(body={"events": [err_event(disabled.client_id, "disabled")]}, creds=disabled),
         403, "data_source_disabled"),
        ("body over the limit", dict(body=big), 413, "payload_too_large"),
        ("chunked body over the limit", dict(body=chunks(big)), 413, "payload_too_large"),
        ("XML", dict(body=one("xml"), content_type="text/xml"), 415, "unsupported_media_type"),
        ("form", dict(body=one("form"), content_type="application/x-www-form-urlencoded"),
         415, "unsupported_media_type"),
        ("multipart", dict(body=one("multipart"), content_type="multipart/form-data; boundary=x"),
         415, "unsupported_media_type"),
    ]
    failures = []
    for what, kwargs, status, code in cases:
        try:
            assert_error(post(gateway, **kwargs), status, code)
        except Exception as exc:  # noqa: BLE001 - collected so one run shows every broken case
            failures.append(f"{what}: {exc}")

    # Rate limit: 1 event/s with a burst of one second's worth.
    limited = keys["limited"]
    first = post(gateway, {"events": [event(limited.client_id)]}, creds=limited)
    assert first.status_code == 200, first.text
    over = post(gateway, {"events": [err_event(limited.client_id, "rate")]}, creds=limited)
    try:
        assert_error(over, 429, "rate_limited")
        wait_s = retry_after_seconds(over)
        time.sleep(wait_s)  # the promise under test: after Retry-After, the source may send again
        again = post(gateway, {"events": [event(limited.client_id)]}, creds=limited)
        assert again.status_code == 200, f"still refused {wait_s}s later (Retry-After): {again.status_code} {again.text}"
    except Exception as exc:  # noqa: BLE001
        failures.append(f"rate limit: {exc}")

    assert not failures, "\n".join(failures)

    wait_for_markers(gateway, store, scope)
    assert_nothing_written_by_error_requests(store)


def test_header_names_and_accepted_media_types(errors_pipeline, store):
    """Header names in any case, every live write key, JSON, text/plain (sendBeacon) and no
    Content-Type are all accepted."""
    gateway, _, keys = errors_pipeline
    main, rotated = keys["main"], keys["main-rotated"]
    scope = main.client_id
    variants = [
        ("lower-case header names", dict(creds=None, headers={"x-client-id": scope, "x-client-access-token": main.token})),
        ("upper-case header names", dict(creds=None, headers={"X-CLIENT-ID": scope, "X-CLIENT-ACCESS-TOKEN": main.token})),
        ("second write key", dict(creds=rotated)),
        ("text/plain", dict(content_type="text/plain")),
        ("sendBeacon's text/plain", dict(content_type="text/plain;charset=UTF-8")),
        ("JSON with charset", dict(content_type="application/json; charset=utf-8")),
        ("no Content-Type", dict(content_type=None)),
    ]
    ids = set()
    failures = []
    for what, kwargs in variants:
        ev = event(scope)
        resp = post(gateway, {"events": [ev]}, **kwargs)
        if resp.status_code == 200 and resp.json().get("accepted") == 1:
            ids.add(ev["itemId"])
        else:
            failures.append(f"{what}: {resp.status_code} {resp.text[:300]}")
    assert not failures, "\n".join(failures)
    store.wait_for_ids(ids, timeout=15)


def refusal_cases(scope: str) -> list[tuple[object, str | None, str]]:
    """(event, expected refusal code or None if accepted, SQL condition finding its row)."""
    m = lambda: f"mark-{uuid.uuid4().hex}"  # noqa: E731

    def ev(**kw):
        return event(scope, itemId=m(), **kw)

    def drop(field):
        e = ev()
        e.pop(field)
        return e

    def by_item(e: dict) -> str:
        """Its itemId, or its (unique) session id, somewhere in raw."""
        where = f"position(raw, {sql_str(e['itemId'])}) > 0"
        if isinstance(e.get("sessionId"), str):
            where += f" OR position(raw, {sql_str(e['sessionId'])}) > 0"
        return f"({where})"

    string_marker, array_marker = m(), m()
    number = 900_000_000_000 + uuid.uuid4().int % 99_999_999_999
    cases: list[tuple[object, str | None, str]] = [
        (string_marker, "invalid_event", f"position(raw, {sql_str(string_marker)}) > 0"),
        ([array_marker], "invalid_event", f"position(raw, {sql_str(array_marker)}) > 0"),
        (number, "invalid_event", f"raw = '{number}'"),
        (None, "invalid_event", "raw = 'null'"),
    ]
    dict_cases: list[tuple[dict, str | None]] = [
        (ev(), None),
        (drop("eventType"), "missing_event_type"),
        (drop("sessionId"), "missing_session_id"),
        (drop("scope"), "missing_scope"),
        (ev(scope=f"{scope}-someone-else"), "scope_mismatch"),
        (drop("timeStamp"), "missing_timestamp"),
        (ev(timeStamp="yesterday"), "invalid_timestamp"),
        (ev(timeStamp="2021-13-45T99:00:00Z"), "invalid_timestamp"),
        (ev(timeStamp="1969-12-31T23:59:59Z"), "invalid_timestamp"),
        (ev(timeStamp="2106-01-01T00:00:00Z"), "invalid_timestamp"),
        (ev(properties="x"), "invalid_field"),
        (ev(properties=["x"]), "invalid_field"),
        (ev(source="_"), "invalid_field"),
        (ev(source={"itemId": 5, "itemType": "_"}), "invalid_field"),
        (ev(target={"itemId": "_"}), "invalid_field"),
        (ev(sendAt="not a date"), "invalid_field"),
        (ev(properties={"blob": "x" * (MAX_EVENT_BYTES + 1000)}), "event_too_large"),
        (ev(properties={"blob": "x" * (MAX_EVENT_BYTES - 2000)}), None),  # just under the limit
        (ev(sessionId=4242424242), None),  # a number, as the reference curl sends it
    ]
    cases += [(e, code, by_item(e)) for e, code in dict_cases]
    return cases


def assert_refused_rows(store, scope: str, cases) -> None:
    """Each refused event is in rejected_events once: stage gateway, its code, its raw JSON,
    under the data source it was sent to (so it shows in that source's event log)."""
    refused = [(e, code, where) for e, code, where in cases if code is not None]

    def missing() -> list[str]:
        return [f"{code} ({where[:60]})" for _, code, where in refused if store.count("rejected_events", where) == 0]

    wait_until(
        lambda: not missing(),
        30,
        interval=0.5,
        what=f"{len(refused)} refused events in rejected_events",
        describe=lambda: f"not recorded: {missing()}",
    )
    problems = []
    for sent, code, where in refused:
        rows = store.rows("rejected_events", where, "scope, stage, reasons, raw")
        if len(rows) != 1:
            problems.append(f"{code}: {len(rows)} rows for {where}")
            continue
        row = rows[0]
        try:
            reasons = json.loads(row["reasons"])
            assert isinstance(reasons, list) and reasons, "reasons must be a non-empty JSON array"
            assert all({"code", "path", "message"} <= set(r) for r in reasons), "each reason needs code, path, message"
            assert code in [r["code"] for r in reasons], f"code {code} not among {reasons}"
            assert row["stage"] == "gateway", f"stage {row['stage']!r}"
            assert row["scope"] == scope, f"scope {row['scope']!r} instead of the client id {scope!r}"
            raw = json.loads(row["raw"])
            if code == "event_too_large":
                # Kafka would refuse it whole: the log keeps its identifying fields,
                # its size and its first KiB.
                text = json.dumps(sent)
                kept = {k: raw.get(k) for k in ("eventType", "sessionId", "itemId", "timeStamp")}
                assert kept == {k: sent.get(k) for k in kept}, f"identifying fields {kept}"
                assert raw["bytes"] == len(text.encode()), f"bytes {raw['bytes']} != {len(text.encode())}"
                assert 0 < len(raw["excerpt"]) <= 1024 and text.startswith(raw["excerpt"]), "excerpt is not a prefix"
            else:
                assert raw == sent, f"raw is not the event as sent ({len(row['raw'])} chars: {row['raw'][:100]!r}…)"
        except (AssertionError, ValueError) as exc:
            problems.append(f"{code}: {exc}")
    assert not problems, "\n".join(problems)


def test_each_refused_event_gets_its_own_code_and_the_rest_is_accepted(errors_pipeline, store):
    """A mixed batch answers 200 with the accepted count and one error per refused event (its
    index and code); accepted events land in `events`, refused ones in `rejected_events`."""
    gateway, _, keys = errors_pipeline
    scope = keys["main"].client_id
    cases = refusal_cases(scope)
    batch = [e for e, _, _ in cases]

    resp = post(gateway, {"events": batch})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    expected_errors = {(i, code) for i, (_, code, _) in enumerate(cases) if code is not None}
    accepted = [e for e, code, _ in cases if code is None]
    assert answer.get("updated") == 0, answer
    assert answer.get("accepted") == len(accepted), answer
    got_errors = {(err.get("index"), err.get("code")) for err in answer.get("errors", [])}
    assert got_errors == expected_errors, (
        f"missing {sorted(expected_errors - got_errors)}, unexpected {sorted(got_errors - expected_errors)}"
    )
    assert all(isinstance(err.get("message"), str) and err["message"] for err in answer["errors"]), answer["errors"]

    store.wait_for_ids({e["itemId"] for e in accepted}, timeout=15)
    assert_refused_rows(store, scope, cases)
    refused_ids = {e["itemId"] for e, code, _ in cases if code is not None and isinstance(e, dict)}
    stored = set(store.id_counts())
    assert not (refused_ids & stored), f"refused events stored as accepted: {refused_ids & stored}"


def test_batch_without_an_acceptable_event_is_refused_whole(errors_pipeline, store):
    """All events refused: 400 all_events_refused with accepted 0 and the per-event errors;
    the events are still recorded as rejected."""
    gateway, _, keys = errors_pipeline
    scope = keys["main"].client_id
    cases = [c for c in refusal_cases(scope) if c[1] is not None][:6]
    resp = post(gateway, {"events": [e for e, _, _ in cases]})

    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body.get("error", {}).get("code") == "all_events_refused", body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    assert body.get("accepted") == 0, body
    assert {(e.get("index"), e.get("code")) for e in body.get("errors", [])} == {
        (i, code) for i, (_, code, _) in enumerate(cases)
    }, body
    assert_refused_rows(store, scope, cases)
    assert store.count("events") == 0
