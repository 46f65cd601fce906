"""Segment-compatible ingest (issue 15), proven with real, unmodified client libraries —
Segment's Python library (PyPI `segment-analytics-python`), Segment's Node library (npm
`@segment/analytics-node`) and RudderStack's Python library (PyPI `rudder-sdk-python`, which
sends gzip-compressed batches) — each configured only with a write key and Powehi's host,
against a real gateway, Kafka, worker and ClickHouse:

- track, page, screen, identify, group and alias and a flush of a few hundred events: each
  message is in `events` and `event_log` exactly once, under its messageId, with the mapped
  type, session (anonymousId, else userId), profile (userId) and the library's `context`;
  identify after anonymous tracks merges the anonymous session into the profile; traits
  declared by the `identify` schema become profile properties;
- the gateway stopped while the library flushes, then started: the library's own retries
  deliver every event once (Python and Node);
- the write key alone (Basic user or `writeKey` in the body) finds its data source; a wrong
  one is a 401 the library does not retry;
- a registered schema is enforced for Segment-sent events as for `/smile`, and a data source's
  unplanned-events policy (`accept`, `keep`) behaves as documented, shown in the event log;
- an event name with spaces round-trips through the admin API and the event-log API;
- an oversize message and an oversize batch get Segment's documented answers.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import queue
import subprocess
import threading
import urllib.parse
import uuid

import requests
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client

from admin_support import Admin
from browser_support import BROWSER_DIR, browser_modules
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


def every_call(track) -> list[tuple[str, dict]]:
    """300 anonymous tracks, then one of each other call: (method, Python keyword arguments)."""
    anon, user = track["anon"], track["user"]
    calls = [("track", {"anonymous_id": anon, "event": "Order Completed", "properties": {"total": i, "extra": 1}})
             for i in range(300)]
    return calls + [
        ("page", {"anonymous_id": anon, "name": "Home", "properties": {"path": "/"}}),
        ("screen", {"anonymous_id": anon, "name": "Cart"}),
        ("identify", {"user_id": user, "anonymous_id": anon, "traits": {"plan": "pro", "email": "x@y.z"}}),
        ("group", {"user_id": user, "group_id": "acme", "traits": {"size": 5}}),
        ("alias", {"previous_id": track["old"], "user_id": user}),
    ]


def check_every_call_stored_once(gateway, store, names, ids: set[str], ids_of: dict, library: str,
                                 user_agent: str) -> None:
    """What every library's run of `every_call` must leave: each message once in `events` and
    `event_log` with its mapped fields and the library's context, and one merged profile."""
    anon, user, old = ids_of["anon"], ids_of["user"], ids_of["old"]
    assert len(ids) == 305
    store.wait_for_ids(ids, timeout=90)
    quoted = ", ".join(sql_str(i) for i in ids)
    counts = store.id_counts(where=f"event_id IN ({quoted})")
    assert set(counts) == ids and set(counts.values()) == {1}, "each message stored once"
    log = store.rows("event_log", f"event_id IN ({quoted})", "event_id, status, context, policy")
    assert len(log) == 305 and {r["status"] for r in log} == {"accepted"}, log[:3]
    assert {r["policy"] for r in log} == {"reject/trim"}, "the default policy, recorded"
    assert {json.loads(r["context"])["library"]["name"] for r in log} == {library}, log[:1]

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
    assert (alias["session_id"], alias["profile_id"]) == (old, user)
    agents = {r["user_agent"] for r in rows.values()}
    assert all(a.startswith(user_agent) for a in agents), f"the library's User-Agent: {agents}"

    # identify after anonymous tracks: one profile holds them, with the trait.
    def profile() -> dict:
        resp = Admin(gateway).get(f"/v1/profiles/{user}")
        return resp.json() if resp.status_code == 200 else {}

    wait_until(lambda: profile().get("eventCount") == 305, 90, what="the merged profile",
               describe=lambda: str(profile())[:400])
    merged = profile()
    assert merged["properties"] == {"plan": "pro"}, merged
    assert f"anon:{names.client_id}:{anon}" in merged["mergedIds"], merged


def subjects(names) -> dict:
    return {"anon": f"anon-{names.hex}", "user": f"user-{names.hex}", "old": f"old-{names.hex}"}


def send_every_call(analytics, sent: Sent, ids_of: dict) -> None:
    """Runs `every_call` through a Python library's client and waits until it has flushed."""
    for method, kwargs in every_call(ids_of):
        sent.keep(getattr(analytics, method)(**kwargs))
    analytics.flush()
    analytics.join()
    assert not sent.errors, sent.errors


def test_the_segment_library_sends_every_call_once(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=bootstrap(names))
    start_worker()
    sent, ids_of = Sent(), subjects(names)
    send_every_call(client(gateway, names.write_key, sent), sent, ids_of)
    check_every_call_stored_once(gateway, store, names, set(sent.ids), ids_of,
                                 library="analytics-python", user_agent="analytics-python/")


def test_the_rudderstack_library_sends_every_call_once(names, start_gateway, start_worker, store):
    """RudderStack's Python library gzips its batches, sends `userId: null` for anonymous
    calls and identify's traits in `context.traits`; it is configured with nothing but the
    write key and the host."""
    gateway = start_gateway(bootstrap=bootstrap(names))
    start_worker()
    sent, ids_of = Sent(), subjects(names)
    analytics = RudderClient(names.write_key, host=f"http://{gateway.addr}", on_error=sent.on_error,
                             upload_interval=0.2)
    send_every_call(analytics, sent, ids_of)
    assert gateway.metric("powehi_gateway_body_bytes_total", encoding="gzip", stage="received"), \
        "the batches came gzip-compressed"
    check_every_call_stored_once(gateway, store, names, set(sent.ids), ids_of,
                                 library="analytics-python", user_agent="analytics-python/")


def node_params(method: str, kwargs: dict) -> dict:
    """A Python call's keyword arguments as @segment/analytics-node's parameters."""
    renamed = {"anonymous_id": "anonymousId", "user_id": "userId", "group_id": "groupId",
               "previous_id": "previousId"}
    return {renamed.get(k, k): v for k, v in kwargs.items()}


class NodeClient:
    """tests/e2e/browser/segment_node.mjs: @segment/analytics-node, driven stage by stage."""

    def __init__(self, gateway, write_key: str, stages: list[list[tuple[str, dict]]], **settings):
        plan = {"host": f"http://{gateway.addr}", "writeKey": write_key, **settings,
                "stages": [[{"method": m, "params": node_params(m, kw)} for m, kw in stage] for stage in stages]}
        env = {**os.environ, "POWEHI_BROWSER_MODULES": str(browser_modules())}
        self.proc = subprocess.Popen(
            ["node", str(BROWSER_DIR / "segment_node.mjs"), json.dumps(plan)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.delivered: dict[str, dict] = {}
        self.errors: list = []

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def until(self, key: str, timeout: float = 180) -> dict:
        """Collects what the library settled until a line with `key` (a stage, or done)."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"the node client exited early: {self.proc.stderr.read()[-2000:]}")
            if key in line:
                return line
            if "error" in line or "libraryError" in line:
                self.errors.append(line)
            elif "messageId" in line:
                self.delivered[line["messageId"]] = line

    def go_on(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_the_segment_node_library_sends_every_call_once(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=bootstrap(names))
    start_worker()
    ids_of = subjects(names)
    node = NodeClient(gateway, names.write_key, [every_call(ids_of)])
    try:
        node.until("done")
    finally:
        node.close()
    assert not node.errors, node.errors[:3]
    check_every_call_stored_once(gateway, store, names, set(node.delivered), ids_of,
                                 library="@segment/analytics-node", user_agent="analytics-node")


def test_the_node_librarys_retries_deliver_once_across_a_gateway_restart(names, start_gateway,
                                                                         start_worker, store):
    boot = bootstrap(names)
    gateway = start_gateway(bootstrap=boot)
    start_worker()
    anon = f"anon-{names.hex}"
    tracks = [("track", {"anonymous_id": anon, "event": "Order Completed", "properties": {"total": i}})
              for i in range(150)]
    node = NodeClient(gateway, names.write_key, [tracks[:50], tracks[50:]], maxRetries=60)
    try:
        node.until("stage")
        gateway.terminate()
        gateway.wait_exit(30)
        node.go_on()  # 100 more, sent to a gateway that is not there, and retried
        restarted = start_gateway(bootstrap=boot, wait_ready=False, POWEHI_HTTP_ADDR=gateway.addr)
        restarted.addr = gateway.addr
        restarted.wait_ready()
        node.until("done")
    finally:
        node.close()
    assert not node.errors, node.errors[:3]
    assert len(node.delivered) == 150
    store.wait_for_ids(set(node.delivered), timeout=90)
    counts = store.id_counts()
    assert {i: counts[i] for i in node.delivered} == {i: 1 for i in node.delivered}


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


def log_entries(admin: Admin, source_id: str, **params) -> list[dict]:
    resp = admin.get(f"/v1/datasources/{source_id}/events", params={"limit": 100, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


def test_schemas_and_the_unplanned_events_policy_apply_to_segment_events(names, start_gateway,
                                                                         start_worker, store):
    """Three sources: the default (reject/trim), one bootstrapped with accept/keep, and one set
    to accept through the admin API. Sent with Segment's library; judged by the registered
    schema; the event log shows the policy each event was ingested under."""
    strict = names.client_id
    open_id, open_key = f"{names.client_id}-open", f"wk-{uuid.uuid4().hex}"
    later_id, later_key = f"{names.client_id}-later", f"wk-{uuid.uuid4().hex}"
    boot = bootstrap(names)
    boot["dataSources"] += [
        data_source(open_id, [open_key], unplannedEvents="accept", undeclaredProperties="keep"),
        data_source(later_id, [later_key]),
    ]
    gateway = start_gateway(bootstrap=boot)
    start_worker()
    admin = Admin(gateway)
    resp = admin.request("PUT", f"/v1/datasources/{later_id}/policy", json_body={"unplannedEvents": "accept"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["unplannedEvents"], resp.json()["undeclaredProperties"]) == ("accept", "trim")
    resp = admin.request("PUT", f"/v1/datasources/{later_id}/policy", json_body={"unplannedEvents": "maybe"})
    assert resp.status_code == 400 and "unknown variant" in resp.json()["error"]["message"], resp.text
    resp = admin.request("PUT", f"/v1/datasources/{later_id}/policy", json_body={})
    assert resp.status_code == 400 and "unplannedEvents" in resp.json()["error"]["message"], resp.text
    assert admin.get(f"/v1/datasources/{open_id}").json()["undeclaredProperties"] == "keep"

    sent: dict[str, dict[str, str]] = {}  # source -> case -> messageId
    for source, key in [(strict, names.write_key), (open_id, open_key), (later_id, later_key)]:
        collected = Sent()
        analytics = client(gateway, key, collected)
        anon = f"anon-{uuid.uuid4().hex[:8]}"
        cases = {
            "unplanned": analytics.track(anonymous_id=anon, event="Signed Up", properties={"plan": "pro"}),
            "planned": analytics.track(anonymous_id=anon, event="Order Completed",
                                       properties={"total": 5, "coupon": "X"}),
            "invalid": analytics.track(anonymous_id=anon, event="Order Completed", properties={"total": "five"}),
        }
        analytics.flush()
        analytics.join()
        assert not collected.errors, collected.errors
        sent[source] = {case: message["messageId"] for case, (ok, message) in cases.items()}
    store.wait_for_ids({i for cases in sent.values() for i in cases.values()}, timeout=90, table="event_log")

    def entry(source: str, case: str) -> dict:
        [found] = [e for e in log_entries(admin, source) if e["eventId"] == sent[source][case]]
        return found

    expected = {  # source -> case -> (status, stored properties or reason code)
        strict: {"unplanned": ("rejected", "unknown_event_type"), "planned": ("accepted", {"total": 5}),
                 "invalid": ("rejected", "wrong_type")},
        open_id: {"unplanned": ("accepted", {"plan": "pro"}), "planned": ("accepted", {"total": 5, "coupon": "X"}),
                  "invalid": ("rejected", "wrong_type")},
        later_id: {"unplanned": ("accepted", {"plan": "pro"}), "planned": ("accepted", {"total": 5}),
                   "invalid": ("rejected", "wrong_type")},
    }
    policies = {strict: ("reject", "trim"), open_id: ("accept", "keep"), later_id: ("accept", "trim")}
    for source, cases in expected.items():
        for case, (status, outcome) in cases.items():
            e = entry(source, case)
            assert e["status"] == status, (source, case, e)
            policy = e["policy"]
            assert (policy["unplannedEvents"], policy["undeclaredProperties"]) == policies[source], (source, e)
            if status == "accepted":
                assert e["properties"] == outcome, (source, case, e)
                assert e["context"]["library"]["name"] == "analytics-python", e
                # untyped under `accept`: no schema version
                assert (e["schemaVersion"] is not None) == (case == "planned"), (source, case, e)
            else:
                assert [r["code"] for r in e["reasons"]] == [outcome], (source, case, e)

    # The name with a space round-trips: the schema through the admin API, the events
    # through the event-log API's filter.
    resp = admin.get("/v1/schemas/" + urllib.parse.quote("Order Completed"))
    assert resp.status_code == 200 and resp.json()["eventType"] == "Order Completed", resp.text
    listed = log_entries(admin, strict, eventType="Order Completed")
    assert {e["eventId"] for e in listed} == {sent[strict]["planned"], sent[strict]["invalid"]}, listed


def test_oversize_messages_and_batches_get_segments_answers(names, start_gateway):
    """Segment's limits: 32 KB per message (that message refused, `event_too_large`; the others
    of its batch taken), 500 KB per request (400 `batch_too_large`, which Segment's libraries
    do not retry), counted after decompression."""
    gateway = start_gateway(bootstrap=bootstrap(names))
    basic = {"Authorization": "Basic " + base64.b64encode(f"{names.write_key}:".encode()).decode()}

    def message(i: int, padding: int = 0) -> dict:
        return {"type": "track", "event": "Order Completed", "anonymousId": "a", "messageId": f"m{i}-{names.hex}",
                "properties": {"total": i, "note": "x" * padding}}

    big = message(1, padding=40 * 1024)
    resp = post(gateway, big, path="/v1/track", creds=None, headers=basic)
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["error"]["code"] == "all_events_refused", answer
    assert [e["code"] for e in answer["errors"]] == ["event_too_large"], answer

    resp = post(gateway, {"batch": [message(2), big]}, path="/v1/batch", creds=None, headers=basic)
    assert resp.status_code == 200, resp.text
    ack = resp.json()
    assert ack["success"] is True and ack["powehi"]["accepted"] == 1, ack
    assert [(e["index"], e["code"]) for e in ack["powehi"]["errors"]] == [(1, "event_too_large")], ack

    batch = {"batch": [message(i, padding=30 * 1024) for i in range(20)]}  # ~600 KB, each message < 32 KB
    body = json.dumps(batch).encode()
    assert 500 * 1024 < len(body) < 1024 * 1024, "over Segment's limit, under the /smile one"
    resp = requests.post(gateway.url("/v1/batch"), data=body, timeout=30,
                         headers={**basic, "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "batch_too_large", resp.text
    resp = requests.post(gateway.url("/v1/batch"), data=gzip.compress(body), timeout=30,
                         headers={**basic, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "batch_too_large", resp.text
    resp = post(gateway, {"batch": batch["batch"][:10]}, path="/v1/batch", creds=None, headers=basic)
    assert resp.status_code == 200 and resp.json()["powehi"]["accepted"] == 10, "under the limit: taken"
