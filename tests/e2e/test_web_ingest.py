"""Web pages can send events (issue 13, gateway side): CORS per data source, credentials a
beacon can carry, compressed bodies, and Unomi's ContextRequest body. Against a real gateway,
Kafka, worker and ClickHouse; the browser-driven tracker tests come with the tracker script."""

from __future__ import annotations

import gzip
import json
import zlib

import requests

from admin_support import Admin
from e2e_support import VIEW_SCHEMA, Creds, assert_error, data_source, event, post

SHOP = "https://shop.example"


def web_bootstrap(names) -> dict:
    return {
        "dataSources": [
            data_source(names.client_id, [names.write_key], allowedOrigins=[SHOP]),
            data_source(f"{names.client_id}-any", [f"any-{names.write_key}"]),
        ],
        "eventSchemas": [VIEW_SCHEMA],
    }


def preflight(gateway, origin: str, query: str = "") -> requests.Response:
    return requests.options(
        gateway.url(f"/powehi/smile{query}"),
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "x-client-id, x-client-access-token, content-type"},
        timeout=10,
    )


def test_cors_grants_exactly_the_allowed_origins(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=web_bootstrap(names))
    start_worker()
    ds, any_ds = names.client_id, f"{names.client_id}-any"

    ok = preflight(gateway, SHOP, f"?clientId={ds}")
    assert ok.status_code == 204, ok.text
    assert ok.headers["Access-Control-Allow-Origin"] == SHOP and ok.headers["Vary"] == "Origin"
    assert ok.headers["Access-Control-Allow-Methods"] == "POST"
    allowed_headers = {h.strip().lower() for h in ok.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"x-client-id", "x-client-access-token", "content-type", "content-encoding"} <= allowed_headers
    assert int(ok.headers["Access-Control-Max-Age"]) > 0
    refused = preflight(gateway, "https://evil.example", f"?clientId={ds}")
    assert_error(refused, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in refused.headers
    # A source allowing any origin grants any; without a named source, some source must allow it.
    assert preflight(gateway, "https://evil.example", f"?clientId={any_ds}").status_code == 204
    assert preflight(gateway, "https://evil.example").status_code == 204

    # Actual requests: granted from the allowed origin, refused (and not stored) from another.
    good = event(ds)
    resp = post(gateway, {"events": [good]}, headers={"Origin": SHOP})
    assert resp.status_code == 200, resp.text
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP and resp.headers["Vary"] == "Origin"
    assert "retry-after" in resp.headers["Access-Control-Expose-Headers"].lower()
    bad = event(ds)
    resp = post(gateway, {"events": [bad]}, headers={"Origin": "https://evil.example"})
    assert_error(resp, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in resp.headers
    store.wait_for_ids({good["itemId"]}, timeout=60)
    assert store.count("events", f"event_id = '{bad['itemId']}'") == 0
    # Errors a page must read (here a bad body) carry the grant too.
    resp = post(gateway, "{", headers={"Origin": SHOP})
    assert_error(resp, 400, "malformed_json")
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP


def test_allowed_origins_through_the_admin_api(names, start_gateway):
    gateway = start_gateway(bootstrap=web_bootstrap(names))
    admin = Admin(gateway)
    created = admin.create_source(allowedOrigins=["https://a.example", "http://localhost:3000"])
    assert created["allowedOrigins"] == ["https://a.example", "http://localhost:3000"]
    assert admin.create_source()["allowedOrigins"] == ["*"], "the documented default"
    for bad in (["https://a.example/path"], ["ftp://a.example"], [], ["a.example"]):
        resp = admin.put(f"/v1/datasources/{created['id']}/allowed-origins", {"allowedOrigins": bad})
        assert_error(resp, 400, "invalid_request")
    resp = admin.put(f"/v1/datasources/{created['id']}/allowed-origins", {"allowedOrigins": [SHOP]})
    assert resp.status_code == 200 and resp.json()["allowedOrigins"] == [SHOP], resp.text
    creds = Creds(created["id"], created["writeKey"])
    assert post(gateway, {"events": [event(created["id"])]}, creds=creds, headers={"Origin": SHOP}).status_code == 200
    refused = post(gateway, {"events": [event(created["id"])]}, creds=creds, headers={"Origin": "https://a.example"})
    assert_error(refused, 403, "origin_not_allowed")


def test_a_beacon_with_query_credentials_and_text_plain_is_stored(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=web_bootstrap(names))
    start_worker()
    ds = names.client_id
    beacon = event(ds)
    query = f"?clientId={ds}&writeKey={names.write_key}"
    resp = post(gateway, json.dumps({"events": [beacon]}), creds=None, content_type="text/plain;charset=UTF-8",
                path=f"/powehi/smile{query}", headers={"Origin": SHOP})
    assert resp.status_code == 200, resp.text
    store.wait_for_ids({beacon["itemId"]}, timeout=60)
    # Headers take precedence over the query.
    resp = post(gateway, {"events": [event(ds)]}, path=f"/powehi/smile?clientId={ds}&writeKey=wrong")
    assert resp.status_code == 200, resp.text
    wrong_header = post(gateway, {"events": [event(ds)]}, creds=Creds(ds, "wrong"), path=f"/powehi/smile{query}")
    assert_error(wrong_header, 401, "invalid_credentials")
    assert_error(post(gateway, {"events": [event(ds)]}, creds=None, path=f"/powehi/smile?clientId={ds}"),
                 401, "missing_credentials")


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_gzip_and_deflate_bodies_and_a_bomb(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=web_bootstrap(names))
    start_worker()
    ds = names.client_id
    sent = []
    for name, compress in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        ev = event(ds)
        body = compress(json.dumps({"events": [ev]}).encode())
        resp = post(gateway, body, headers={"Content-Encoding": name})
        assert resp.status_code == 200, (name, resp.text)
        sent.append(ev["itemId"])
    store.wait_for_ids(set(sent), timeout=60)
    assert gateway.metric("powehi_gateway_body_bytes_total", encoding="gzip", stage="decoded") > 0

    # 100:1 and over the 1 MiB limit once decoded: a 413 after reading at most the limit.
    bomb = gzip.compress(b'{"events": [' + b" " * (100 * 1024 * 1024) + b"]}")
    assert len(bomb) < 1024 * 1024, len(bomb)
    before = rss_kb(gateway.popen.pid)
    for _ in range(5):
        assert_error(post(gateway, bomb, headers={"Content-Encoding": "gzip"}, timeout=60), 413, "payload_too_large")
    grown = rss_kb(gateway.popen.pid) - before
    assert grown < 64 * 1024, f"the gateway grew by {grown} kB decoding bombs"

    resp = post(gateway, {"events": [event(ds)]}, headers={"Content-Encoding": "br"})
    err = assert_error(resp, 415, "unsupported_encoding")
    assert '"br"' in err["error"]["message"], err
    assert_error(post(gateway, {"events": [event(ds)]}, headers={"Content-Encoding": "gzip"}), 400, "malformed_encoding")


def test_context_takes_unomis_body(names, start_gateway, start_worker):
    gateway = start_gateway(bootstrap=web_bootstrap(names))
    start_worker()
    resp = post(gateway, {"sessionId": "s-unomi", "requiredProfileProperties": ["*"]}, path="/powehi/context")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["sessionId"] == "s-unomi" and answer["profileId"] == f"anon:{names.client_id}:s-unomi", answer
    ev = event(names.client_id, sessionId="s-other")
    resp = post(gateway, {"sessionId": "s-unomi", "events": [ev]}, path="/powehi/context")
    assert resp.status_code == 200 and resp.json()["sessionId"] == "s-unomi", resp.text
    assert_error(post(gateway, {}, path="/powehi/context"), 400, "invalid_body")


def test_the_tracker_script_is_served_with_a_validator(names, start_gateway):
    """GET /powehi.js (root and prefix): the asset's bytes, as JavaScript, cacheable a few
    minutes, with an ETag that answers 304 to a revalidation."""
    from e2e_support import REPO

    gateway = start_gateway()
    asset = (REPO / "ingest-gateway" / "assets" / "powehi.js").read_bytes()
    for path in ("/powehi.js", "/powehi/powehi.js"):
        resp = requests.get(gateway.url(path), timeout=10)
        assert resp.status_code == 200, resp.text[:200]
        assert resp.content == asset
        assert resp.headers["Content-Type"].startswith("text/javascript"), resp.headers
        assert "max-age=300" in resp.headers["Cache-Control"], resp.headers
        tag = resp.headers["ETag"]
        for validator in (tag, f'"other", {tag}', "*"):
            again = requests.get(gateway.url(path), headers={"If-None-Match": validator}, timeout=10)
            assert again.status_code == 304 and again.content == b"", (validator, again.status_code)
            assert again.headers["ETag"] == tag
        assert requests.get(gateway.url(path), headers={"If-None-Match": '"stale"'}, timeout=10).status_code == 200
