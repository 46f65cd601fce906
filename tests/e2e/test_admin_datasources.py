"""Data sources through the admin API (issue 3): bearer auth, create/list/get, tokens,
disable/enable, and that every change is live on every gateway sharing the config log —
the writing one at once (read-your-writes), the others within a second, and a gateway
started later as soon as it is ready (it replays the log before /readyz says 200)."""

from __future__ import annotations

import time
import uuid

from admin_support import (  # noqa: F401 - fixtures
    DEFAULT_ADMIN_TOKEN,
    PROPAGATION_S,
    Admin,
    admin_stack,
    assert_exits_naming,
    assert_no_secrets,
    bootstrap_with,
    config_topic,
    creds_of,
    gateway_env,
    seg,
    worker_env,
)
from e2e_support import Creds, assert_error, event, free_port, post, sql_str, wait_until


def ingest_ok(gateway, creds: Creds, n: int = 1) -> list[str]:
    """Posts `n` valid events with `creds`; asserts 200 with all accepted; returns their ids."""
    evs = [event(creds.client_id) for _ in range(n)]
    resp = post(gateway, {"events": evs}, creds=creds)
    assert resp.status_code == 200, f"{gateway.name} with {creds.client_id}: {resp.status_code} {resp.text[:300]}"
    assert resp.json().get("accepted", n) == n, resp.text
    return [e["itemId"] for e in evs]


def ingest_status(gateway, creds: Creds) -> tuple[int, dict]:
    resp = post(gateway, {"events": [event(creds.client_id)]}, creds=creds)
    try:
        body = resp.json()
    except ValueError:
        body = {"text": resp.text[:200]}
    return resp.status_code, body


def wait_ingest_status(gateway, creds: Creds, status: int, code: str | None = None) -> float:
    """Seconds until `gateway` answers `status` (and error `code`) to `creds`; fails after PROPAGATION_S."""
    t0 = time.monotonic()

    def there():
        got, body = ingest_status(gateway, creds)
        there.last = (got, body)  # type: ignore[attr-defined]
        return got == status and (code is None or body.get("error", {}).get("code") == code)

    there.last = None  # type: ignore[attr-defined]
    try:
        wait_until(there, PROPAGATION_S, interval=0.05, what=f"{gateway.name} to answer {status} {code or ''}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer {there.last}") from None  # type: ignore[attr-defined]
    return time.monotonic() - t0


# --------------------------------------------------------------------------- auth


def admin_routes(ds_id: str) -> list[tuple[str, str, object]]:
    ev = event(ds_id)
    return [
        ("GET", "/v1/datasources", None),
        ("POST", "/v1/datasources", {"name": "sneaky", "id": f"sneaky-{uuid.uuid4().hex[:6]}"}),
        ("GET", f"/v1/datasources/{ds_id}", None),
        ("POST", f"/v1/datasources/{ds_id}/disable", None),
        ("POST", f"/v1/datasources/{ds_id}/enable", None),
        ("POST", f"/v1/datasources/{ds_id}/tokens", None),
        ("DELETE", f"/v1/datasources/{ds_id}/tokens/whatever", None),
        ("GET", f"/v1/datasources/{ds_id}/events", None),
        ("PUT", "/v1/schemas/sneaky", {"properties": []}),
        ("GET", "/v1/schemas", None),
        ("GET", "/v1/schemas/view", None),
        ("POST", "/v1/schemas/view/validate", ev),
    ]


def test_every_admin_route_needs_the_bearer_token_and_an_unauthorized_call_changes_nothing(
    names, config_topic, admin_stack, start_gateway
):
    secret = f"admin-{uuid.uuid4().hex}"
    stack = admin_stack(workers=0, POWEHI_ADMIN_TOKEN=secret)
    admin = stack.admin
    assert admin.token == secret
    sources_before = admin.sources()
    schemas_before = admin.schemas()
    source_before = admin.source(names.client_id)

    bad_headers = {
        "no header": None,
        "wrong token": {"Authorization": "Bearer not-the-token"},
        "default token while another is configured": {"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"},
        "token with a suffix": {"Authorization": f"Bearer {secret}x"},
        "token prefix": {"Authorization": f"Bearer {secret[:-1]}"},
        "other scheme": {"Authorization": f"Basic {secret}"},
        "bare token": {"Authorization": secret},
        "empty bearer": {"Authorization": "Bearer "},
    }
    problems = []
    for method, path, body in admin_routes(names.client_id):
        for label, headers in bad_headers.items():
            kw = {"token": None, "headers": headers}
            resp = (
                admin.request(method, path, json_body=body, **kw)
                if body is not None
                else admin.request(method, path, **kw)
            )
            try:
                assert_error(resp, 401, "unauthorized")
            except AssertionError as exc:
                problems.append(f"{method} {path} ({label}): {exc}")
    assert not problems, f"{len(problems)} admin calls not refused with 401 unauthorized:\n" + "\n".join(problems[:20])

    # Nothing changed: same sources (still enabled, same tokens), same schemas, ingest still works.
    assert admin.sources() == sources_before
    assert admin.schemas() == schemas_before
    assert admin.source(names.client_id) == source_before
    assert admin.schema("sneaky").status_code == 404
    ingest_ok(stack.gateway, names.creds)

    # On loopback without POWEHI_ADMIN_TOKEN, the token is demo-admin-token.
    other = start_gateway(**gateway_env(names, config_topic))
    assert "POWEHI_ADMIN_TOKEN" not in other.env
    default_admin = Admin(other)
    assert default_admin.token == DEFAULT_ADMIN_TOKEN
    assert {s["id"] for s in default_admin.sources()} == {s["id"] for s in sources_before}
    assert_error(default_admin.get("/v1/datasources", token=secret), 401, "unauthorized")
    assert_error(default_admin.get("/v1/datasources", token=None), 401, "unauthorized")


def test_gateway_refuses_a_non_loopback_admin_address_without_a_token(names, config_topic, start_gateway):
    """0.0.0.0 without POWEHI_ADMIN_TOKEN: exit code != 0, the message names the variable. With a
    token the same address works, and only that token opens it (never the demo default)."""
    env = gateway_env(names, config_topic)
    refused = start_gateway(wait_ready=False, POWEHI_ADMIN_ADDR=f"0.0.0.0:{free_port()}", **env)
    assert_exits_naming(refused, 30, "POWEHI_ADMIN_TOKEN")

    # An empty token is no token.
    refused_empty = start_gateway(
        wait_ready=False, POWEHI_ADMIN_ADDR=f"0.0.0.0:{free_port()}", POWEHI_ADMIN_TOKEN="", **env
    )
    assert_exits_naming(refused_empty, 30, "POWEHI_ADMIN_TOKEN")

    secret = f"admin-{uuid.uuid4().hex}"
    gw = start_gateway(POWEHI_ADMIN_ADDR=f"0.0.0.0:{free_port()}", POWEHI_ADMIN_TOKEN=secret, **env)
    admin = Admin(gw)  # reached through 127.0.0.1
    assert admin.token == secret
    assert names.client_id in {s["id"] for s in admin.sources()}
    assert_error(admin.get("/v1/datasources", token=DEFAULT_ADMIN_TOKEN), 401, "unauthorized")
    assert_error(admin.get("/v1/datasources", token=None), 401, "unauthorized")


# --------------------------------------------------------------------------- create, list, get


def test_create_list_and_get_data_sources(names, admin_stack):
    stack = admin_stack(workers=0)
    admin = stack.admin

    # The bootstrap's data source is there (POWEHI_BOOTSTRAP upserted into the config log).
    listed = admin.sources()
    assert names.client_id in {s["id"] for s in listed}, listed

    ds_id = f"shop-{names.hex}"
    created = admin.create_source("Shop", id=ds_id, maxEventsPerSecond=500)
    assert created["id"] == ds_id
    assert created["name"] == "Shop"
    assert created["enabled"] is True
    assert created["maxEventsPerSecond"] == 500
    assert isinstance(created["writeKey"], str) and len(created["writeKey"]) >= 16, created
    assert isinstance(created["tokenId"], str) and created["tokenId"], created
    assert [t["id"] for t in created["tokens"]] == [created["tokenId"]], created
    assert created["tokenId"] not in created["writeKey"] and created["writeKey"] not in created["tokenId"]

    # Without an id one is generated; without a rate there is none.
    generated = admin.create_source("Second shop")
    assert isinstance(generated["id"], str) and generated["id"] and generated["id"] != ds_id, generated
    assert generated.get("maxEventsPerSecond") is None, generated
    assert generated["writeKey"] != created["writeKey"]

    # Read-your-writes: GET right after sees both; never a write key nor a hash.
    one = admin.source(ds_id)
    assert one["id"] == ds_id and one["name"] == "Shop" and one["enabled"] is True
    assert one["maxEventsPerSecond"] == 500
    assert [t["id"] for t in one["tokens"]] == [created["tokenId"]]
    assert "writeKey" not in one, one
    listed = admin.sources()
    by_id = {s["id"]: s for s in listed}
    assert {ds_id, generated["id"], names.client_id} <= set(by_id), listed
    assert by_id[ds_id] == one
    assert len(listed) == len(by_id), f"an id listed twice: {[s['id'] for s in listed]}"
    secrets = [created["writeKey"], generated["writeKey"], names.write_key]
    assert_no_secrets(listed, secrets)
    assert_no_secrets(one, secrets)
    assert_no_secrets(admin.source(names.client_id), secrets)

    # An existing id: 409 conflict, and the existing source is untouched.
    dup = admin.post("/v1/datasources", {"name": "Impostor", "id": ds_id})
    assert_error(dup, 409, "conflict")
    assert admin.source(ds_id) == one
    assert_error(admin.post("/v1/datasources", {"name": "Impostor", "id": names.client_id}), 409, "conflict")
    assert admin.sources() == listed

    # Unknown id: 404 not_found, on every data-source route.
    missing = f"nope-{names.hex}"
    assert_error(admin.get(f"/v1/datasources/{missing}"), 404, "not_found")
    assert_error(admin.post(f"/v1/datasources/{missing}/disable"), 404, "not_found")
    assert_error(admin.post(f"/v1/datasources/{missing}/enable"), 404, "not_found")
    assert_error(admin.post(f"/v1/datasources/{missing}/tokens"), 404, "not_found")
    assert_error(admin.delete(f"/v1/datasources/{missing}/tokens/{created['tokenId']}"), 404, "not_found")
    assert_error(admin.get(f"/v1/datasources/{missing}/events"), 404, "not_found")
    assert admin.sources() == listed


def test_a_new_data_source_posts_through_every_gateway(names, store, admin_stack, start_gateway, config_topic):
    """Created through gateway A: A takes its events at once, gateway B (already running, same
    config topic) within a second, gateway C started afterwards as soon as it is ready; the
    worker stores them under the new data source. A source created through B is listed by A."""
    stack = admin_stack(gateways=2)
    a, b = stack.gateways
    admin_a, admin_b = stack.admins
    records_b_before = b.metric("powehi_gateway_config_records_total") or 0.0

    created = admin_a.create_source("New shop", id=f"new-{names.hex}")
    creds = creds_of(created)
    ids = ingest_ok(a, creds, 3)  # read-your-writes: no wait on the writing gateway
    took = wait_ingest_status(b, creds, 200)
    ids += ingest_ok(b, creds, 3)
    print(f"new data source live on the other gateway after {took:.2f}s")

    c = start_gateway(**gateway_env(names, config_topic))
    ids += ingest_ok(c, creds, 3)  # replayed before ready: no wait

    store.wait_for_ids(set(ids), 60)
    rows = store.rows("events", f"event_id IN ({', '.join(sql_str(i) for i in ids)})", "event_id, scope")
    assert {r["scope"] for r in rows} == {created["id"]}, rows

    # And the other way round: written through B, seen by A within a second.
    other = admin_b.create_source("Made on B", id=f"on-b-{names.hex}")
    assert admin_b.source(other["id"])["name"] == "Made on B"  # read-your-writes on B
    wait_until(
        lambda: other["id"] in {s["id"] for s in admin_a.sources()},
        PROPAGATION_S,
        interval=0.05,
        what="gateway A to list the data source created through gateway B",
    )
    wait_ingest_status(a, creds_of(other), 200)

    # Config records applied are counted (B applied at least the two new data sources).
    records_b = b.metric("powehi_gateway_config_records_total")
    assert records_b is not None, "gateway /metrics has no powehi_gateway_config_records_total"
    assert records_b >= records_b_before + 2, (records_b_before, records_b)
    labelled = [lab for n, lab, _ in b.metrics() if n == "powehi_gateway_config_records_total"]
    assert all("result" in lab for lab in labelled), labelled


def test_revoked_token_and_disabled_source_stop_working_on_every_gateway(names, admin_stack):
    stack = admin_stack(gateways=2, workers=0)
    a, b = stack.gateways
    admin = stack.admin
    created = admin.create_source("Rotating", id=f"rot-{names.hex}")
    first = creds_of(created)
    wait_ingest_status(b, first, 200)

    # Rotation: a second token works alongside the first, at once on A, within a second on B.
    added = admin.add_token(created["id"])
    second = Creds(created["id"], added["writeKey"])
    assert added["tokenId"] != created["tokenId"] and added["writeKey"] != created["writeKey"]
    ingest_ok(a, second)
    ingest_ok(a, first)
    wait_ingest_status(b, second, 200)
    view = admin.source(created["id"])
    assert sorted(t["id"] for t in view["tokens"]) == sorted([created["tokenId"], added["tokenId"]])
    assert_no_secrets(view, [created["writeKey"], added["writeKey"]])

    # Revoke the first: 401 invalid_credentials at once on A, within a second on B; the second lives on.
    after = admin.revoke_token(created["id"], created["tokenId"])
    assert [t["id"] for t in after["tokens"]] == [added["tokenId"]], after
    assert admin.source(created["id"])["tokens"] == after["tokens"]
    status, body = ingest_status(a, first)
    assert status == 401 and body.get("error", {}).get("code") == "invalid_credentials", (status, body)
    took = wait_ingest_status(b, first, 401, "invalid_credentials")
    print(f"revoked token refused by the other gateway after {took:.2f}s")
    ingest_ok(a, second)
    ingest_ok(b, second)

    # Revoking again, or an unknown token: 404, nothing changed.
    assert_error(admin.delete(f"/v1/datasources/{seg(created['id'])}/tokens/{seg(created['tokenId'])}"), 404, "not_found")
    assert_error(admin.delete(f"/v1/datasources/{seg(created['id'])}/tokens/no-such-token"), 404, "not_found")
    assert admin.source(created["id"]) == after

    # Disable: 403 at once on A, within a second on B, for every token; others unaffected.
    disabled = admin.set_enabled(created["id"], False)
    assert disabled["id"] == created["id"] and [t["id"] for t in disabled["tokens"]] == [added["tokenId"]]
    assert admin.source(created["id"])["enabled"] is False
    status, body = ingest_status(a, second)
    assert status == 403 and isinstance(body.get("error", {}).get("code"), str), (status, body)
    took = wait_ingest_status(b, second, 403)
    print(f"disabled source refused by the other gateway after {took:.2f}s")
    ingest_ok(a, names.creds)
    ingest_ok(b, names.creds)
    # Disabling twice is harmless.
    assert admin.set_enabled(created["id"], False)["enabled"] is False

    # Enable again: works at once on A, within a second on B; the revoked token stays revoked.
    admin.set_enabled(created["id"], True)
    ingest_ok(a, second)
    wait_ingest_status(b, second, 200)
    status, body = ingest_status(b, first)
    assert status == 401 and body.get("error", {}).get("code") == "invalid_credentials", (status, body)

    # The bootstrap source can be disabled through the API too.
    admin.set_enabled(names.client_id, False)
    status, _ = ingest_status(a, names.creds)
    assert status == 403
    wait_ingest_status(b, names.creds, 403)


def test_max_events_per_second_of_a_created_source_is_enforced(names, admin_stack):
    stack = admin_stack(workers=0)
    admin = stack.admin
    created = admin.create_source("Slow", id=f"slow-{names.hex}", maxEventsPerSecond=5)
    assert admin.source(created["id"])["maxEventsPerSecond"] == 5
    creds = creds_of(created)
    statuses = []
    for _ in range(6):
        resp = post(stack.gateway, {"events": [event(creds.client_id) for _ in range(5)]}, creds=creds)
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert resp.headers.get("Retry-After"), dict(resp.headers)
            break
    assert 429 in statuses, f"30 events in a burst at 5 events/s never answered 429: {statuses}"
    assert admin.sources()  # and the admin API is not rate limited by a data source's rate


def test_bootstrap_data_source_and_schema_are_in_the_config_log_for_a_worker(names, store, admin_stack):
    """The worker gets schemas only from the config log: the bootstrap's `view` schema, upserted
    by the gateway, is what lets the worker accept `view` events."""
    stack = admin_stack(bootstrap=bootstrap_with(names))
    ids = ingest_ok(stack.gateway, names.creds, 5)
    store.wait_for_ids(set(ids), 60)
    assert store.count("rejected_events", f"scope = '{names.client_id}'") == 0
    applied = stack.worker.metric("powehi_worker_config_records_total")
    assert applied is not None and applied >= 2, f"powehi_worker_config_records_total = {applied}"  # source + schema
