"""Helpers and fixtures of the issue-3 end-to-end tests: the admin API, the config log, schemas,
validation and the event log.

Fixtures (import them into a test module: `from admin_support import config_topic, admin_stack`):
- `config_topic`: a config-log topic of the test's own (`powehi.test.<hex>.config`), deleted
  after a passing test;
- `admin_stack`: `admin_stack(workers=1, gateways=1, bootstrap=None, **gateway_env)` starts
  gateways and workers sharing the test's config topic, with the event-log reads pointed at
  the test's database; returns a `Stack` (gateways, workers, `admin` = client of the first
  gateway's admin API).

Helpers: `Admin` (one gateway's admin API), `gateway_env`/`worker_env` (the env a gateway or a
worker needs for issue 3), `reason_pairs`, `as_json`, `time_ms`, `iso_ms`, `assert_no_secrets`,
`assert_newest_first`, `page_all`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pytest
import requests

from confluent_kafka import ConsumerGroupState

from e2e_support import (
    CLICKHOUSE_URL,
    START_TIMEOUT_S,
    VIEW_SCHEMA,
    Creds,
    Proc,
    assert_error,
    data_source,
    kafka_admin,
    topic_partitions,
    wait_until,
)

DEFAULT_ADMIN_TOKEN = "demo-admin-token"
#: "within a second" on every process; a little slack for a loaded test machine.
PROPAGATION_S = 5.0

_DEFAULT = object()


# --------------------------------------------------------------------------- admin API


class Admin:
    """The admin API of one gateway (`POWEHI_ADMIN_ADDR` of its env)."""

    def __init__(self, gateway: Proc, token: str | None = None):
        self.gateway = gateway
        self.addr = gateway.env["POWEHI_ADMIN_ADDR"].replace("0.0.0.0", "127.0.0.1")
        self.token = token if token is not None else gateway.env.get("POWEHI_ADMIN_TOKEN", DEFAULT_ADMIN_TOKEN)
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return f"http://{self.addr}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = _DEFAULT,
        data: bytes | str | None = None,
        params: Any = None,
        token: str | None | object = _DEFAULT,
        headers: dict | None = None,
        timeout: float = 30,
    ) -> requests.Response:
        """One admin request. `token=None` sends no Authorization header; `data` is sent raw
        (as application/json unless `headers` say otherwise)."""
        h: dict[str, str] = {}
        tok = self.token if token is _DEFAULT else token
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        body = None
        if json_body is not _DEFAULT:
            body = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        elif data is not None:
            body = data.encode() if isinstance(data, str) else data
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        return self.http.request(method, self.url(path), data=body, params=params, headers=h, timeout=timeout)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = _DEFAULT, **kw) -> requests.Response:
        return self.request("POST", path, json_body=body, **kw)

    def put(self, path: str, body: Any = _DEFAULT, **kw) -> requests.Response:
        return self.request("PUT", path, json_body=body, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    # ---- data sources

    def create_source(self, name: str | None = None, **fields) -> dict:
        """POST /v1/datasources, expecting 201; returns the answer (with writeKey)."""
        body = {"name": name or f"Shop {uuid.uuid4().hex[:6]}", **fields}
        resp = self.post("/v1/datasources", body)
        assert resp.status_code == 201, f"create data source {body}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def sources(self) -> list[dict]:
        resp = self.get("/v1/datasources")
        assert resp.status_code == 200, f"list data sources: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        assert set(body) == {"dataSources"} and isinstance(body["dataSources"], list), body
        return body["dataSources"]

    def source(self, ds_id: str) -> dict:
        resp = self.get(f"/v1/datasources/{seg(ds_id)}")
        assert resp.status_code == 200, f"get data source {ds_id}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def set_enabled(self, ds_id: str, enabled: bool) -> dict:
        resp = self.post(f"/v1/datasources/{seg(ds_id)}/{'enable' if enabled else 'disable'}")
        assert resp.status_code == 200, f"{'enable' if enabled else 'disable'} {ds_id}: {resp.status_code} {resp.text}"
        view = resp.json()
        assert view.get("enabled") is enabled, view
        return view

    def add_token(self, ds_id: str) -> dict:
        resp = self.post(f"/v1/datasources/{seg(ds_id)}/tokens")
        assert resp.status_code == 201, f"add token to {ds_id}: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        assert isinstance(body.get("tokenId"), str) and body["tokenId"], body
        assert isinstance(body.get("writeKey"), str) and body["writeKey"], body
        return body

    def revoke_token(self, ds_id: str, token_id: str) -> dict:
        resp = self.delete(f"/v1/datasources/{seg(ds_id)}/tokens/{seg(token_id)}")
        assert resp.status_code == 200, f"revoke {token_id} of {ds_id}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    # ---- schemas

    def put_schema(self, event_type: str, definition: dict, expect: int | tuple = (200, 201)) -> dict:
        resp = self.put(f"/v1/schemas/{seg(event_type)}", definition)
        want = (expect,) if isinstance(expect, int) else expect
        assert resp.status_code in want, f"PUT schema {event_type}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def schema(self, event_type: str, version: int | None = None) -> requests.Response:
        params = {"version": str(version)} if version is not None else None
        return self.get(f"/v1/schemas/{seg(event_type)}", params=params)

    def schemas(self) -> list[dict]:
        resp = self.get("/v1/schemas")
        assert resp.status_code == 200, f"list schemas: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        assert set(body) == {"schemas"} and isinstance(body["schemas"], list), body
        return body["schemas"]

    def validate(self, event_type: str, ev: Any) -> dict:
        resp = self.post(f"/v1/schemas/{seg(event_type)}/validate", ev)
        assert resp.status_code == 200, f"validate {event_type}: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        for key in ("valid", "schemaVersion", "reasons", "properties"):
            assert key in body, f"validate answer without {key!r}: {body}"
        return body

    # ---- event log

    def events(self, ds_id: str, **params) -> requests.Response:
        return self.get(f"/v1/datasources/{seg(ds_id)}/events", params={k: v for k, v in params.items() if v is not None})

    def events_page(self, ds_id: str, **params) -> dict:
        resp = self.events(ds_id, **params)
        assert resp.status_code == 200, f"event log of {ds_id} {params}: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        assert isinstance(body.get("events"), list) and "nextCursor" in body, body
        return body


def seg(text: str) -> str:
    """One URL path segment, percent-encoded (so `/`, `'`, spaces reach the server as data)."""
    return quote(text, safe="")


def page_all(admin: Admin, ds_id: str, *, max_pages: int = 200, pause: float = 0.0, on_page=None, **params) -> list[dict]:
    """Every event of the filtered log, following nextCursor (bounded by `max_pages`)."""
    out: list[dict] = []
    cursor = None
    for n in range(max_pages):
        page = admin.events_page(ds_id, cursor=cursor, **params)
        out.extend(page["events"])
        if on_page is not None:
            on_page(n, page)
        cursor = page["nextCursor"]
        if cursor is None:
            return out
        assert isinstance(cursor, str) and cursor, f"nextCursor must be an opaque string or null: {cursor!r}"
        if pause:
            time.sleep(pause)
    raise AssertionError(f"event log of {ds_id} still had a nextCursor after {max_pages} pages")


# --------------------------------------------------------------------------- env and fixtures


def gateway_env(names, config_topic: str, **extra) -> dict:
    """What a gateway needs for issue 3: the test's config topic and event-log database."""
    return {
        "POWEHI_CONFIG_TOPIC": config_topic,
        "POWEHI_CLICKHOUSE_URL": CLICKHOUSE_URL,
        "POWEHI_CLICKHOUSE_DATABASE": names.database,
        **extra,
    }


def worker_env(config_topic: str, **extra) -> dict:
    return {"POWEHI_CONFIG_TOPIC": config_topic, **extra}


@pytest.fixture
def config_topic(request, names) -> str:
    topic = getattr(names, "config_topic", None) or f"powehi.test.{names.hex}.config"
    yield topic
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.passed:
        print(f"kept for inspection: config topic {topic}")
        return
    try:
        for fut in kafka_admin().delete_topics([topic], operation_timeout=10).values():
            fut.result(timeout=15)
    except Exception:  # noqa: BLE001 - best effort (the topic may not exist)
        pass


@dataclass
class Stack:
    gateways: list[Proc]
    workers: list[Proc]
    admins: list[Admin] = field(default_factory=list)

    @property
    def gateway(self) -> Proc:
        return self.gateways[0]

    @property
    def worker(self) -> Proc | None:
        return self.workers[0] if self.workers else None

    @property
    def admin(self) -> Admin:
        return self.admins[0]


def group_owned_partitions(group: str) -> int:
    """Partitions owned by the members of a stable consumer group (0 while rebalancing).

    Unlike e2e_support.group_members_partitions, keeps the AdminClient alive until the answer
    is in and bounds the wait: a future of a destroyed client may never complete."""
    client = kafka_admin()
    desc = client.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    if desc.state != ConsumerGroupState.STABLE:
        return 0
    return sum(len(m.assignment.topic_partitions) for m in desc.members)


def start_assigned_worker(start_worker, names, config_topic: str, **env) -> Proc:
    """start_worker(wait="ready"), then wait (bounded) until the group owns every partition."""
    worker = start_worker(wait="ready", **worker_env(config_topic, **env))
    partitions = topic_partitions(names.topic)
    wait_until(
        lambda: group_owned_partitions(names.group) == partitions,
        START_TIMEOUT_S,
        what=f"group {names.group} to own all {partitions} partitions",
    )
    return worker


@pytest.fixture
def admin_stack(names, config_topic, start_gateway, start_worker):
    """admin_stack(gateways=1, workers=1, bootstrap=None, **gateway_env) -> Stack."""

    def start(*, gateways: int = 1, workers: int = 1, bootstrap: dict | None = None, **env) -> Stack:
        gws = [
            start_gateway(bootstrap=bootstrap, **gateway_env(names, config_topic, **env)) for _ in range(gateways)
        ]
        wks = [start_assigned_worker(start_worker, names, config_topic) for _ in range(workers)]
        return Stack(gws, wks, [Admin(g) for g in gws])

    return start


def bootstrap_with(names, *extra_sources: dict, schemas: list | None = None) -> dict:
    """The default bootstrap (the test's data source, schema `view`) plus more."""
    return {
        "dataSources": [data_source(names.client_id, [names.write_key]), *extra_sources],
        "eventSchemas": schemas if schemas is not None else [VIEW_SCHEMA],
    }


def creds_of(created: dict) -> Creds:
    return Creds(created["id"], created["writeKey"])


# --------------------------------------------------------------------------- checks


def as_json(value: Any) -> Any:
    """A JSON column or field that may arrive as text or already decoded."""
    if isinstance(value, str):
        return json.loads(value) if value else None
    return value


def reason_pairs(reasons: Any) -> list[tuple[str, str]]:
    """(code, path) of each reason, sorted; asserts each reason has code, path and a message."""
    reasons = as_json(reasons)
    assert isinstance(reasons, list), f"reasons must be a list: {reasons!r}"
    for r in reasons:
        assert isinstance(r, dict) and {"code", "path", "message"} <= set(r), f"reason without code/path/message: {r}"
        assert isinstance(r["message"], str) and r["message"], f"reason with an empty message: {r}"
    return sorted((r["code"], r["path"]) for r in reasons)


def time_ms(value: Any) -> int:
    """Epoch milliseconds of an ISO 8601 string or an epoch-ms number."""
    if isinstance(value, (int, float)):
        return int(value)
    assert isinstance(value, str) and value, f"not a time: {value!r}"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(dt.timestamp() * 1000)


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def assert_no_secrets(payload: Any, secrets: list[str]) -> None:
    """No write key and no hash anywhere in an admin answer."""
    text = json.dumps(payload)
    for secret in secrets:
        assert secret not in text, f"a write key appears in {text[:300]}"
    assert "sha256" not in text.lower(), f"a key hash appears in {text[:300]}"

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                assert "hash" not in k.lower(), f"field {path}.{k} exposes a hash"
                assert k not in ("writeKey", "writeKeys"), f"field {path}.{k} exposes a write key"
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(payload, "$")


def assert_newest_first(events: list[dict]) -> None:
    """receivedAt never increases; among equal receivedAt, eventIds go one way only (a total
    order, so that a cursor can resume between ties)."""
    direction = 0
    for prev, cur in zip(events, events[1:]):
        a, b = time_ms(prev["receivedAt"]), time_ms(cur["receivedAt"])
        assert a >= b, f"not newest first: {prev['eventId']} ({prev['receivedAt']}) before {cur['eventId']} ({cur['receivedAt']})"
        if a == b:
            assert prev["eventId"] != cur["eventId"], f"{cur['eventId']} twice in a row"
            d = 1 if cur["eventId"] > prev["eventId"] else -1
            if direction == 0:
                direction = d
            assert d == direction, f"ties on receivedAt not ordered by id: {prev['eventId']} then {cur['eventId']}"


def assert_exits_naming(proc: Proc, timeout: float, needle: str) -> int:
    """The process exits by itself within `timeout` with a non-zero code and logs `needle`."""
    code = wait_until(lambda: proc.popen.poll() is not None and (proc.popen.returncode,), timeout, 0.1,
                      what=f"{proc.name} to refuse to start")[0]
    assert code != 0, f"{proc.name} exited with 0; log:\n{proc.tail()}"
    log = proc.log_path.read_text(errors="replace")
    assert needle in log, f"{proc.name} exit message does not name {needle}:\n{proc.tail()}"
    return code


__all__ = [
    "Admin",
    "DEFAULT_ADMIN_TOKEN",
    "PROPAGATION_S",
    "Stack",
    "admin_stack",
    "as_json",
    "assert_error",
    "assert_exits_naming",
    "assert_newest_first",
    "assert_no_secrets",
    "bootstrap_with",
    "config_topic",
    "creds_of",
    "gateway_env",
    "iso_ms",
    "page_all",
    "reason_pairs",
    "seg",
    "start_assigned_worker",
    "time_ms",
    "worker_env",
]
