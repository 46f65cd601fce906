"""Segment-compatible ingest (issue 15, points 1–3), proven with Segment's own Python library
(PyPI `segment-analytics-python`, unmodified), configured only with a write key and
Powehi's host, against a real gateway, Kafka, worker and ClickHouse:

- track, page, screen, identify, group and alias and a flush of a few hundred events: each
  message is in `events` and `event_log` exactly once, under its messageId, with the mapped
  type, session (anonymousId, else userId) and profile (userId); identify after anonymous
  tracks merges the anonymous session into the profile; traits declared by the `identify`
  schema become profile properties;
- the gateway stopped while the library flushes, then started: the library's own retries
  deliver every event once;
- the write key alone (Basic user or `writeKey` in the body) finds its data source; a wrong
  one is a 401 the library does not retry.
"""

from __future__ import annotations

import base64
import json
import logging
import threading

import requests
from segment.analytics import Client

from admin_support import Admin
from e2e_support import data_source, post, sql_str, wait_until

SCHEMAS = [
    {"eventType": "Order Completed", "properties": [{"name": "total", "type": "number", "required": True}]},
    {"eventType": "page", "properties": [{"name": "name", "type": "string"}]},
    {"eventType": "screen", "properties": [{"name": "name", "type": "string"}]},
    {"eventType": "identify", "properties": [{"name": "plan", "type": "string", "profileProperty": "plan"}]},
    {"eventType": "group", "properties": [{"name": "groupId", "type": "string"}]},
    {"eventType": "alias", "properties": [{"name": "previousId", "type": "string"}]},
]


def bootstrap(names) -> dict:
    return {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": SCHEMAS}


class Sent:
    """Collects what the library says it enqueued, and any error it reports."""

    def __init__(self) -> None:
        self.ids: dict[str, dict] = {}
        self.errors: list = []
        self.lock = threading.Lock()

    def keep(self, result) -> None:
        ok, message = result
        assert ok, message
        self.ids[message["messageId"]] = message

    def on_error(self, error, batch) -> None:
        with self.lock:
            self.errors.append((repr(error), len(batch)))


def client(gateway, write_key: str, sent: Sent, **kw) -> Client:
    return Client(write_key, host=f"http://{gateway.addr}", on_error=sent.on_error,
                  upload_interval=0.2, **kw)


def stored(store, ids) -> dict[str, dict]:
    quoted = ", ".join(sql_str(i) for i in ids)
    rows = store.rows("events FINAL", f"event_id IN ({quoted})",
                      "event_id, event_type, session_id, profile_id, properties, user_agent")
    return {r["event_id"]: r for r in rows}


def test_the_segment_library_sends_every_call_once(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=bootstrap(names))
    start_worker()
    sent = Sent()
    analytics = client(gateway, names.write_key, sent)
    anon, user = f"anon-{names.hex}", f"user-{names.hex}"
    for i in range(300):
        sent.keep(analytics.track(anonymous_id=anon, event="Order Completed", properties={"total": i, "extra": 1}))
    sent.keep(analytics.page(anonymous_id=anon, name="Home", properties={"path": "/"}))
    sent.keep(analytics.screen(anonymous_id=anon, name="Cart"))
    sent.keep(analytics.identify(user_id=user, anonymous_id=anon, traits={"plan": "pro", "email": "x@y.z"}))
    sent.keep(analytics.group(user_id=user, group_id="acme", traits={"size": 5}))
    sent.keep(analytics.alias(previous_id=f"old-{names.hex}", user_id=user))
    analytics.flush()
    analytics.join()
    assert not sent.errors, sent.errors

    ids = set(sent.ids)
    assert len(ids) == 305
    store.wait_for_ids(ids, timeout=90)
    counts = store.id_counts(where=f"event_id IN ({', '.join(sql_str(i) for i in ids)})")
    assert set(counts) == ids and set(counts.values()) == {1}, "each message stored once"
    log = store.rows("event_log", f"event_id IN ({', '.join(sql_str(i) for i in ids)})", "event_id, status")
    assert len(log) == 305 and {r["status"] for r in log} == {"accepted"}, log[:3]

    rows = stored(store, ids)
    by_type: dict[str, list] = {}
    for row in rows.values():
        by_type.setdefault(row["event_type"], []).append(row)
    assert {t: len(v) for t, v in by_type.items()} == {
        "Order Completed": 300, "page": 1, "screen": 1, "identify": 1, "group": 1, "alias": 1}
    anonymous = f"anon:{names.client_id}:{anon}"  # the session's anonymous profile
    assert all((r["session_id"], r["profile_id"]) == (anon, anonymous) for r in by_type["Order Completed"])
    assert sorted(json.loads(r["properties"])["total"] for r in by_type["Order Completed"]) == list(range(300))
    [identify] = by_type["identify"]
    assert (identify["session_id"], identify["profile_id"]) == (anon, user)
    assert json.loads(identify["properties"]) == {"plan": "pro"}
    [page] = by_type["page"]
    assert json.loads(page["properties"]) == {"name": "Home"}
    [alias] = by_type["alias"]
    assert (alias["session_id"], alias["profile_id"]) == (f"old-{names.hex}", user)
    assert all(r["user_agent"].startswith("analytics-python/") for r in rows.values()), "the library's UA"

    # identify after anonymous tracks: one profile holds them, with the trait.
    def profile() -> dict:
        resp = Admin(gateway).get(f"/v1/profiles/{user}")
        return resp.json() if resp.status_code == 200 else {}

    wait_until(lambda: profile().get("eventCount") == 305, 90, what="the merged profile",
               describe=lambda: str(profile())[:400])
    merged = profile()
    assert merged["properties"] == {"plan": "pro"}, merged
    assert f"anon:{names.client_id}:{anon}" in merged["mergedIds"], merged


def test_library_retries_deliver_once_across_a_gateway_restart(names, start_gateway, start_worker, store):
    boot = bootstrap(names)
    gateway = start_gateway(bootstrap=boot)
    start_worker()
    sent = Sent()
    analytics = client(gateway, names.write_key, sent, max_retries=30)
    logging.getLogger("segment").setLevel(logging.CRITICAL)  # connection refused, retried
    anon = f"anon-{names.hex}"
    for i in range(50):
        sent.keep(analytics.track(anonymous_id=anon, event="Order Completed", properties={"total": i}))
    analytics.flush()
    gateway.terminate()
    gateway.wait_exit(30)
    for i in range(50, 150):
        sent.keep(analytics.track(anonymous_id=anon, event="Order Completed", properties={"total": i}))
    restarted = start_gateway(bootstrap=boot, wait_ready=False, POWEHI_HTTP_ADDR=gateway.addr)
    restarted.addr = gateway.addr
    restarted.wait_ready()
    analytics.flush()
    analytics.join()
    assert not sent.errors, sent.errors
    store.wait_for_ids(set(sent.ids), timeout=90)
    counts = store.id_counts()
    assert {i: counts[i] for i in sent.ids} == {i: 1 for i in sent.ids}


def test_the_write_key_alone_names_the_source(names, start_gateway):
    gateway = start_gateway(bootstrap=bootstrap(names))
    message = {"type": "track", "event": "Order Completed", "anonymousId": "a", "properties": {"total": 1},
               "messageId": f"m-{names.hex}"}
    basic = "Basic " + base64.b64encode(f"{names.write_key}:".encode()).decode()
    for path, body, headers in [
        ("/v1/track", message, {"Authorization": basic}),
        ("/powehi/v1/batch", {"batch": [message], "writeKey": names.write_key}, {}),
    ]:
        resp = post(gateway, body, path=path, creds=None, headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.json()["success"] is True
    wrong = "Basic " + base64.b64encode(b"not-a-key:").decode()
    resp = post(gateway, message, path="/v1/track", creds=None, headers={"Authorization": wrong})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_credentials", resp.text
    resp = post(gateway, message, path="/v1/track", creds=None)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "missing_credentials", resp.text
    resp = requests.post(gateway.url("/v1/batch"), data="{", headers={"Authorization": basic}, timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "malformed_json", resp.text
