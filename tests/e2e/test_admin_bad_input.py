"""Bad input to the admin API (issue 3): malformed JSON, unknown fields, wrong types, oversized
names, injection attempts in path ids and event-log filters — each gets a specific 4xx error
({"error":{"code","message"}}) and changes nothing; filters are bound, never spliced into SQL."""

from __future__ import annotations

import json
import uuid

from admin_support import admin_stack, config_topic, page_all, seg  # noqa: F401 - fixtures
from e2e_support import assert_error, event, post, sql_str, wait_until

INJECTIONS = [
    "x' OR 1=1 --",
    "x') OR ('1'='1",
    "' OR scope != '",
    "x\\' OR 1=1 --",
    "'; DROP TABLE events; --",
    "' UNION ALL SELECT * FROM system.tables --",
    "x\" OR \"1\"=\"1",
]


def check(problems: list, label: str, resp, status: int, code: str | None, needles=()) -> None:
    """Records a problem unless `resp` is the error `status`/`code` whose message holds every needle
    (code None: any non-empty code)."""
    try:
        if code is None:
            assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:300]}"
            body = resp.json()
            assert set(body) == {"error"} and body["error"].get("code") and body["error"].get("message"), body
            err = body["error"]
        else:
            err = assert_error(resp, status, code)["error"]
        for needle in needles:
            if isinstance(needle, tuple):  # any of these
                assert any(n in err["message"] for n in needle), f"message names none of {needle}: {err['message']!r}"
            else:
                assert needle in err["message"], f"message does not name {needle!r}: {err['message']!r}"
    except (AssertionError, ValueError) as exc:
        problems.append(f"{label}: {exc}")


def test_bad_data_source_requests_get_specific_errors_and_change_nothing(names, admin_stack):
    stack = admin_stack(workers=0)
    admin = stack.admin
    before = admin.sources()
    marker = f"bad-{names.hex}"
    long = "a" * 129
    problems: list[str] = []

    raw_cases = [
        ('{"name": "x"', 400, "invalid_json", []),
        ("{name: 'x'}", 400, "invalid_json", []),
        ("", 400, "invalid_json", []),
        ("null", 400, "invalid_json", []),
        ("[]", 400, "invalid_json", []),
        ('"Shop"', 400, "invalid_json", []),
    ]
    for body, status, code, needles in raw_cases:
        check(problems, f"POST /v1/datasources {body!r}", admin.request("POST", "/v1/datasources", data=body), status, code, needles)

    json_cases = [
        ({"name": marker, "colour": "red"}, 400, "invalid_json", ["colour"]),
        ({"name": marker, "writeKey": "my-own-key"}, 400, "invalid_json", ["writeKey"]),
        ({"name": marker, "tokens": [{"id": "t", "hash": "sha256:" + "0" * 64}]}, 400, "invalid_json", ["tokens"]),
        ({"name": 5}, 400, "invalid_json", [("name", "string")]),
        ({"name": ["x"]}, 400, "invalid_json", [("name", "string")]),
        ({"name": marker, "id": 42}, 400, "invalid_json", [("id", "string")]),
        ({"name": marker, "maxEventsPerSecond": "fast"}, 400, "invalid_json", [("maxEventsPerSecond", "integer")]),
        ({"name": marker, "maxEventsPerSecond": -1}, 400, "invalid_json", []),
        ({"name": marker, "maxEventsPerSecond": 1.5}, 400, "invalid_json", []),
        # Oversized names and ids, and ids that could not travel plainly in a header or a URL.
        ({"name": long}, 400, None, ["128"]),
        ({"name": marker, "id": long}, 400, None, ["128"]),
        ({"name": marker, "id": "x' OR 1=1 --"}, 400, None, ["id"]),
        ({"name": marker, "id": "a/b"}, 400, None, ["id"]),
        ({"name": marker, "id": "a b"}, 400, None, ["id"]),
    ]
    for body, status, code, needles in json_cases:
        check(problems, f"POST /v1/datasources {json.dumps(body)[:80]}", admin.post("/v1/datasources", body), status, code, needles)

    # A body far over any sensible size: refused (400 or 413), never a crash.
    huge = admin.post("/v1/datasources", {"name": "x" * (2 * 1024 * 1024)})
    if huge.status_code not in (400, 413):
        problems.append(f"2 MiB name: {huge.status_code} {huge.text[:200]}")

    # Injection attempts and odd ids in the path: 404 not_found (or 400), never a match.
    for bad in INJECTIONS + ["../schemas", "%2e%2e", long, "x\u0000y"]:
        for method, path in (
            ("GET", f"/v1/datasources/{seg(bad)}"),
            ("POST", f"/v1/datasources/{seg(bad)}/disable"),
            ("POST", f"/v1/datasources/{seg(bad)}/enable"),
            ("POST", f"/v1/datasources/{seg(bad)}/tokens"),
            ("DELETE", f"/v1/datasources/{seg(names.client_id)}/tokens/{seg(bad)}"),
            ("GET", f"/v1/datasources/{seg(bad)}/events"),
        ):
            resp = admin.request(method, path)
            if resp.status_code not in (400, 404):
                problems.append(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
            else:
                check(problems, f"{method} {path}", resp, resp.status_code, None)

    assert not problems, f"{len(problems)} bad requests not refused as specified:\n" + "\n".join(problems)

    # Nothing changed: the same list (nothing created, nothing disabled, no token added or
    # revoked), and the gateway still serves the test's data source.
    after = admin.sources()
    assert after == before, f"the data-source list changed:\nbefore {before}\nafter  {after}"
    assert marker not in json.dumps(after)
    assert stack.gateway.alive()
    resp = post(stack.gateway, {"events": [event(names.client_id)]})
    assert resp.status_code == 200, resp.text


def test_bad_event_log_queries_get_invalid_query_and_filters_are_bound(names, store, admin_stack):
    scope = names.client_id
    stack = admin_stack()
    admin, gateway = stack.admin, stack.gateway

    tricky_session = "o'brien\"; DROP TABLE events; --"
    tricky_profile = "p\\' OR '1'='1"
    tricky_type = "view"
    evs = [
        event(scope, sessionId=f"plain-{names.hex}"),
        event(scope, sessionId=tricky_session),
        event(scope, sessionId=f"prof-{names.hex}", profileId=tricky_profile),
        event(scope, eventType=f"nosuch-{names.hex}"),  # a rejected one too
    ]
    resp = post(gateway, {"events": evs})
    assert resp.status_code == 200, resp.text
    wait_until(
        lambda: len(admin.events_page(scope, limit=100)["events"]) >= len(evs),
        60,
        interval=0.5,
        what="the events in the event log",
    )
    counts_before = (store.count("events"), store.count("rejected_events"))
    log_before = [e["eventId"] for e in page_all(admin, scope)]
    assert sorted(log_before) == sorted(e["itemId"] for e in evs)
    real = admin.events_page(scope, limit=1)
    assert real["nextCursor"], real

    problems: list[str] = []
    path = f"/v1/datasources/{seg(scope)}/events"
    bad_queries = [
        ({"foo": "1"}, "invalid_query", ["foo"]),
        ({"session_id": "x"}, "invalid_query", ["session_id"]),
        ({"status": "maybe"}, "invalid_query", ["status"]),
        ({"status": "accepted' OR 1=1 --"}, "invalid_query", ["status"]),
        ({"limit": "0"}, "invalid_query", ["limit"]),
        ({"limit": "1001"}, "invalid_query", ["limit"]),
        ({"limit": "-1"}, "invalid_query", ["limit"]),
        ({"limit": "abc"}, "invalid_query", ["limit"]),
        ({"limit": "1.5"}, "invalid_query", ["limit"]),
        ({"limit": "10; DROP TABLE events"}, "invalid_query", ["limit"]),
        ({"from": "yesterday"}, "invalid_query", ["from"]),
        ({"to": "2021-13-45T99:00:00Z"}, "invalid_query", ["to"]),
        ({"from": "2021-10-15' OR 1=1 --"}, "invalid_query", ["from"]),
        ({"cursor": "not-a-cursor"}, "invalid_cursor", []),
        ({"cursor": "' OR 1=1 --"}, "invalid_cursor", []),
        ({"cursor": "%%%"}, "invalid_cursor", []),
    ]
    for params, code, needles in bad_queries:
        check(problems, f"GET events {params}", admin.get(path, params=params), 400, code, needles)
    check(problems, "unknown data source", admin.get(f"/v1/datasources/nope-{names.hex}/events"), 404, "not_found")
    check(
        problems,
        "unknown data source with a bad query",
        admin.get(f"/v1/datasources/nope-{names.hex}/events", params={"limit": "5"}),
        404,
        "not_found",
    )

    # Injection attempts in filters: 200 with only matching rows, i.e. none.
    for attempt in INJECTIONS:
        for param in ("sessionId", "profileId", "eventType"):
            resp = admin.get(path, params={param: attempt})
            if resp.status_code != 200 or resp.json().get("events") != []:
                problems.append(f"{param}={attempt!r}: {resp.status_code} {resp.text[:300]}")
        resp = admin.get(path, params={"sessionId": attempt, "status": "accepted"})
        if resp.status_code != 200 or resp.json().get("events") != []:
            problems.append(f"sessionId={attempt!r}&status=accepted: {resp.status_code} {resp.text[:300]}")

    # Values with quotes and backslashes match exactly their own rows.
    exact = [
        ({"sessionId": tricky_session}, [evs[1]["itemId"]]),
        ({"profileId": tricky_profile}, [evs[2]["itemId"]]),
        ({"sessionId": tricky_session, "eventType": tricky_type}, [evs[1]["itemId"]]),
        ({"sessionId": tricky_session[:-1]}, []),
    ]
    for params, want in exact:
        resp = admin.get(path, params=params)
        got = [e["eventId"] for e in resp.json().get("events", [])] if resp.status_code == 200 else resp.text[:200]
        if got != want:
            problems.append(f"{params}: expected {want}, got {resp.status_code} {got}")

    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)

    # Nothing changed: same rows, same log, tables still there, the cursor still works.
    assert (store.count("events"), store.count("rejected_events")) == counts_before
    assert [e["eventId"] for e in page_all(admin, scope)] == log_before
    again = admin.events_page(scope, limit=1, cursor=real["nextCursor"])
    assert again["events"] and again["events"][0]["eventId"] == log_before[1], again
    assert store.count("events", f"session_id = {sql_str(tricky_session)}") == 1
    assert stack.gateway.alive() and stack.worker.alive()
    # And the pipeline still works.
    more = event(scope, sessionId=f"after-{uuid.uuid4().hex[:6]}")
    assert post(gateway, {"events": [more]}).status_code == 200
    store.wait_for_ids({more["itemId"]}, 60)
