"""The console (`/console/` on the admin listener) in Debian's chromium, headless, driven by
playwright-core (browser_support), against a real gateway, Kafka, worker and ClickHouse.

One test walks the reference document's workflow as an operator would, through the pages
only: sign in; create a data source and copy its write key; create the schema `view` (and a
second version, compared side by side, and an event checked in the "validate" box); send the
reference request with the curl the page shows for that key; find the event in Event Logs,
accepted, at its UTC time; see an event of an unknown type rejected with its reason (arriving
in live mode); filter by session; open the profile; page through 250 events without a repeat
or a gap. A second test shows that a console write without its CSRF token, or with a wrong
one, is refused (403 JSON), that sign-out ends the session, and that bearer clients are
unchanged.

The run writes a screenshot of each page to docs/console/ (shown in the README).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from admin_support import DEFAULT_ADMIN_TOKEN, admin_stack, config_topic  # noqa: F401 - fixtures
from browser_support import Page
from e2e_support import REPO, data_source, event, post, wait_until

SHOTS = REPO / "docs" / "console"
STORE_TIMEOUT_S = 60


def bootstrap(names) -> dict:
    """A data source the test does not use (the console creates its own) and no schema: the
    console registers `view`."""
    return {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": []}


def admin_url(stack, path: str = "") -> str:
    return stack.admin.url(path)


def wait_for(page: Page, expr: str, what: str, timeout: float = 20):
    """Polls a JavaScript expression in the page until it is truthy; the page's API errors
    are in the failure message."""
    return wait_until(
        lambda: page.eval(expr), timeout, 0.25, what=what,
        describe=lambda: "errors shown: " + repr(page.eval(
            "[...document.querySelectorAll('[data-testid=api-error]')].map(e => e.textContent)")),
    )


def text(page: Page, selector: str) -> str:
    return page.eval(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")


def sign_in(page: Page) -> None:
    wait_for(page, "!!document.querySelector('#admin-token')", "the sign-in form")
    page.fill("#admin-token", DEFAULT_ADMIN_TOKEN)
    page.click("#signin-submit")
    wait_for(page, "!!document.querySelector('[data-testid=sources-table], [data-testid=empty-state]')",
             "the data sources page after sign-in")


def goto_hash(page: Page, fragment: str) -> None:
    page.eval(f"location.hash = {json.dumps(fragment)}")


def event_rows(page: Page) -> list[dict]:
    return page.eval("""[...document.querySelectorAll('tr.event-row')].map(r => ({
        id: r.dataset.eventId, status: r.dataset.status,
        received: r.querySelector('[data-testid=received]').textContent,
        eventTime: r.querySelector('[data-testid=event-time]').textContent,
        type: r.children[2].textContent, session: r.children[3].textContent}))""")


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(SHOTS / f"{name}.png")


def test_console_walks_the_reference_workflow(names, admin_stack, browser, store):
    """The reference workflow through the console's pages, each step checked against what
    the pages show and, where it matters, against the API and the store."""
    stack = admin_stack(bootstrap=bootstrap(names))
    gateway = stack.gateway
    origin = admin_url(stack)
    browser.call("grantClipboard", origin=origin)

    # `/` links to the console; the console asks for the admin token.
    landing = requests.get(admin_url(stack, "/"), timeout=10)
    assert landing.status_code == 200 and 'href="/console/"' in landing.text, landing.text[:300]
    page = browser.open(admin_url(stack, "/console/"))
    wait_for(page, "!!document.querySelector('#admin-token')", "the sign-in form")
    shot(page, "sign-in")
    page.fill("#admin-token", "not-the-token")
    page.click("#signin-submit")
    wait_for(page, "document.querySelector('[data-testid=api-error]')?.textContent.includes('unauthorized')",
             "a wrong token refused with the API's error shown")
    sign_in(page)
    assert "powehi_console" not in page.eval("document.cookie"), "the session cookie must be HttpOnly"

    # Create a data source; its write key is shown once, with a copy button and the curl.
    ds_id = f"shop-{names.hex}"
    page.click("[data-testid=new-source]")
    page.fill("#ds-name", "Reference shop")
    page.fill("#ds-id", ds_id)
    page.click("[data-testid=create-source-submit]")
    wait_for(page, "!!document.querySelector('[data-testid=new-write-key]')", "the new write key")
    write_key = text(page, "[data-testid=new-write-key]")
    assert write_key.startswith("pk_") and len(write_key) > 40, write_key
    page.click("[data-testid=copy-key]")
    assert page.eval("navigator.clipboard.readText()") == write_key, "the copy button copies the write key"
    curl = text(page, "[data-testid=curl]")
    assert f'X-Client-Access-Token: {write_key}' in curl and f'"scope": "{ds_id}"' in curl, curl
    wait_for(page, f"!!document.querySelector('tr[data-source=\"{ds_id}\"]')", "the new source in the list")
    assert [s["id"] for s in stack.admin.sources() if s["id"] == ds_id] == [ds_id]
    shot(page, "data-source-created")

    # Create the schema `view` (as the reference document's example), then a second version
    # with an optional property that is also a profile property.
    goto_hash(page, "#/schemas/new")
    wait_for(page, "!!document.querySelector('#schema-event-type')", "the schema editor")
    page.fill("#schema-event-type", "view")
    page.click("[data-testid=save-schema]")
    wait_for(page, "!!document.querySelector('[data-testid=schema-diff]')", "the schema page of view v1")
    assert stack.admin.schema("view").json()["version"] == 1
    page.click("[data-testid=new-version]")
    wait_for(page, "!!document.querySelector('[data-testid=add-property]')", "the editor of a new version")
    page.click("[data-testid=add-property]")
    page.fill(".prop-row .prop-name", "url")
    page.fill(".prop-row .prop-profile", "lastUrl")
    page.click("[data-testid=save-schema]")
    wait_for(page, "document.querySelector('[data-testid=schema-diff] tr.diff-added')?.textContent.includes('url')",
             "version 2 beside version 1, url added")
    latest = stack.admin.schema("view").json()
    assert latest["version"] == 2 and latest["properties"] == [
        {"name": "url", "type": "string", "required": False, "profileProperty": "lastUrl"}
    ], latest
    # The validate box: the reasons the worker would record for url: 5.
    bad = {"eventType": "view", "sessionId": "s-validate", "properties": {"url": 5}, "scope": ds_id,
           "timeStamp": "2021-10-15T18:49:00+07:00"}
    page.fill("[data-testid=validate-input]", json.dumps(bad, indent=2))
    page.click("[data-testid=validate-submit]")
    wait_for(page, "!!document.querySelector('[data-testid=validate-result] [data-testid=reasons]')", "the verdict")
    shown_reasons = page.eval("""[...document.querySelectorAll('[data-testid=validate-result] [data-testid=reasons] tbody tr')]
        .map(r => [...r.children].map(c => c.textContent))""")
    assert [r[:2] for r in shown_reasons] == [["wrong_type", "$.properties.url"]], shown_reasons
    shot(page, "event-schemas")

    # Send the reference request with the curl the console showed.
    sent = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=False)
    assert sent.returncode == 0 and json.loads(sent.stdout) == {"updated": 0, "accepted": 1}, (sent.stdout, sent.stderr)

    # Event Logs: the event, accepted, at its UTC time (18:49 at +07:00 is 11:49 UTC).
    goto_hash(page, f"#/events/{ds_id}")

    def reference_row():
        page.eval("location.reload()") if not page.eval("document.querySelectorAll('tr.event-row').length") else None
        rows = [r for r in event_rows(page) if r["session"] == "12345"]
        return rows[0] if rows else None

    row = wait_until(reference_row, STORE_TIMEOUT_S, 1.0, what="the reference event in Event Logs")
    assert row["status"] == "accepted" and row["type"] == "view", row
    assert row["eventTime"] == "2021-10-15 11:49:00.000 UTC", row

    # Live mode: an event of an unknown type arrives without a reload, rejected with its reason;
    # the same wrong url as in the validate box is rejected with the reasons the box showed.
    page.click("[data-testid=live-toggle]")
    wait_for(page, "location.hash.includes('live=1') && !!document.querySelector('tr.event-row')", "live mode on")
    creds = type(gateway.creds)(ds_id, write_key)
    unknown = event(ds_id, eventType="checkout", sessionId="s-unknown")
    wrong = event(ds_id, sessionId="s-validate", properties={"url": 5})
    resp = post(gateway, {"events": [unknown, wrong]}, creds=creds)
    assert resp.status_code == 200, resp.text
    for ev in (unknown, wrong):
        wait_for(page, f"document.querySelector('tr.event-row[data-event-id=\"{ev['itemId']}\"]')?.dataset.status === 'rejected'",
                 f"{ev['eventType']} rejected, shown live", timeout=STORE_TIMEOUT_S)
    page.click(f"tr.event-row[data-event-id=\"{unknown['itemId']}\"] td[data-testid=received]")
    reasons = page.eval(f"""[...document.querySelector('tr.event-row[data-event-id="{unknown['itemId']}"]')
        .nextElementSibling.querySelectorAll('[data-testid=reasons] tbody tr')].map(r => [...r.children].map(c => c.textContent))""")
    assert [r[:2] for r in reasons] == [["unknown_event_type", "$.eventType"]], reasons
    page.click(f"tr.event-row[data-event-id=\"{wrong['itemId']}\"] td[data-testid=received]")
    stored = page.eval(f"""[...document.querySelector('tr.event-row[data-event-id="{wrong['itemId']}"]')
        .nextElementSibling.querySelectorAll('[data-testid=reasons] tbody tr')].map(r => [...r.children].map(c => c.textContent))""")
    assert stored == shown_reasons, f"the validate box said {shown_reasons}, the worker recorded {stored}"
    wait_for(page, "document.querySelector('[data-testid=chart] .legend')?.textContent.includes('2 rejected')",
             "the chart counting the two rejected events", timeout=15)
    shot(page, "event-logs")

    # Filter by session (the filter is kept in the URL).
    page.click("[data-testid=live-toggle]")
    wait_for(page, "!location.hash.includes('live=1') && !!document.querySelector('tr.event-row')", "live mode off")
    page.fill("#f-sessionId", "12345")
    page.click("[data-testid=apply-filters]")
    wait_for(page, "location.hash.includes('sessionId=12345') && document.querySelectorAll('tr.event-row').length === 1",
             "only session 12345")
    assert [r["session"] for r in event_rows(page)] == ["12345"]
    # A time range (UTC, kept in the URL): around now it holds the event; a past hour holds
    # nothing, and the page says what to do.
    now = datetime.now(timezone.utc)
    local = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731 - datetime-local's format
    page.fill("#f-from", local(now - timedelta(minutes=30)))
    page.fill("#f-to", local(now + timedelta(minutes=30)))
    page.click("[data-testid=apply-filters]")
    wait_for(page, "location.hash.includes('from=') && location.hash.includes('to=') && "
             "document.querySelectorAll('tr.event-row').length === 1", "the session's event within the range")
    page.fill("#f-from", local(now - timedelta(days=1, hours=1)))
    page.fill("#f-to", local(now - timedelta(days=1)))
    page.click("[data-testid=apply-filters]")
    wait_for(page, "document.querySelector('[data-testid=empty-state]')?.textContent.includes('No event matches')",
             "an empty range explained")
    page.fill("#f-from", "")
    page.fill("#f-to", "")
    page.click("[data-testid=apply-filters]")
    wait_for(page, "!location.hash.includes('from=') && document.querySelectorAll('tr.event-row').length === 1",
             "the range cleared")
    shared = page.eval("location.href")
    other = browser.open(shared)
    wait_for(other, "document.querySelectorAll('tr.event-row').length === 1", "the shared URL shows the filtered view")
    other.close()

    # Identify the session's visitor, then open the profile from the event row.
    identify = event(ds_id, sessionId="12345", profileId="user-42", properties={"url": "https://shop.example/p/1"})
    assert post(gateway, {"events": [identify]}, creds=creds).status_code == 200
    store.wait_for_ids({identify["itemId"]}, timeout=STORE_TIMEOUT_S)
    page.click("[data-testid=profile-link]")
    wait_for(page, "location.hash.startsWith('#/profiles/') && !!document.querySelector('[data-testid=profile-events]')",
             "the profile page with its events")
    assert text(page, "[data-testid=profile-id]") == "user-42", "the anonymous session resolves to its profile"
    assert f"12345 in {ds_id}" in text(page, "[data-testid=merged-sessions]")
    assert "lastUrl" in text(page, "[data-testid=profile-properties]")
    assert page.eval("document.querySelectorAll('[data-testid=profile-events] tbody tr').length") == 2
    shot(page, "profile")

    # Page through 250 events of one session: each once, none missing, newest first.
    ids = []
    for batch in range(5):
        events = [event(ds_id, sessionId="s-paging") for _ in range(50)]
        ids += [e["itemId"] for e in events]
        assert post(gateway, {"events": events}, creds=creds).status_code == 200
    store.wait_for_ids(set(ids), timeout=STORE_TIMEOUT_S)
    goto_hash(page, f"#/events/{ds_id}?sessionId=s-paging")
    wait_for(page, "document.querySelectorAll('tr.event-row').length === 100", "the first page")
    pages = 1
    while not page.eval("!!document.querySelector('[data-testid=end-of-log]')"):
        before = page.eval("document.querySelectorAll('tr.event-row').length")
        page.click("[data-testid=load-more]")
        wait_for(page, f"document.querySelectorAll('tr.event-row').length > {before} || "
                 "!!document.querySelector('[data-testid=end-of-log]')", "the next page")
        pages += 1
        assert pages <= 5, "more pages than 250 events make"
    listed = page.eval("[...document.querySelectorAll('tr.event-row')].map(r => r.dataset.eventId)")
    assert pages == 3 and len(listed) == 250 and len(set(listed)) == 250, (pages, len(listed), len(set(listed)))
    assert set(listed) == set(ids)
    api_order = [e["eventId"] for e in stack.admin.events_page(ds_id, sessionId="s-paging", limit=1000)["events"]]
    assert listed == api_order, "the console lists the log in the API's order (newest first)"

    # The data source page: disable/enable, add and revoke a key.
    goto_hash(page, f"#/sources/{ds_id}")
    page.click("[data-testid=add-token]")
    wait_for(page, "!!document.querySelector('[data-testid=new-write-key]')", "the added write key")
    assert len(stack.admin.source(ds_id)["tokens"]) == 2
    page.click("[data-testid=disable-source]")
    wait_for(page, "!!document.querySelector('[data-testid=enable-source]')", "the source disabled")
    assert stack.admin.source(ds_id)["enabled"] is False
    page.click("[data-testid=enable-source]")
    wait_for(page, "!!document.querySelector('[data-testid=disable-source]')", "the source enabled again")
    shot(page, "data-source")

    # The list counts the events of the last hour (event-counts): 254 here, 2 of them rejected.
    goto_hash(page, "#/sources")
    wait_for(page, f"document.querySelector('tr[data-source=\"{ds_id}\"] [data-testid=last-hour]')?.textContent"
             ".startsWith('254 (2 rejected)')", "254 events in the last hour, 2 rejected")
    shot(page, "data-sources")
    # No script error; the only failed loads are the answers the test provoked (401 before
    # sign-in and for the wrong token).
    problems = [e for e in browser.console() if e["kind"] == "pageerror" or (
        e.get("type") == "error" and "401" not in e["text"])]
    assert not problems, [e["text"] for e in problems]


def test_console_writes_need_the_csrf_token_and_bearer_clients_are_unchanged(names, admin_stack, browser):
    """A write made with the session cookie but without the session's CSRF token, or with a
    wrong one, is refused 403 with a JSON error and changes nothing; with the token it passes.
    Reads need only the cookie. Sign-out ends the session. Bearer clients need no cookie and
    no CSRF token."""
    stack = admin_stack(bootstrap=bootstrap(names))
    page = browser.open(admin_url(stack, "/console/"))
    sign_in(page)

    def fetch(method: str, path: str, headers: dict | None = None, body: dict | None = None) -> dict:
        return page.eval(f"""fetch({json.dumps(path)}, {{method: {json.dumps(method)}, credentials: 'same-origin',
            headers: {json.dumps({"Content-Type": "application/json", **(headers or {})})},
            body: {json.dumps(json.dumps(body) if body is not None else None)}}})
            .then(async r => ({{status: r.status, type: r.headers.get('content-type'), body: await r.json().catch(() => null)}}))""")

    missing = fetch("POST", "/v1/datasources", body={"name": "no csrf", "id": f"nocsrf-{names.hex}"})
    assert missing["status"] == 403 and missing["type"].startswith("application/json"), missing
    assert missing["body"]["error"]["code"] == "csrf_token_missing", missing
    wrong = fetch("POST", "/v1/datasources", {"X-CSRF-Token": "csrf_" + uuid.uuid4().hex},
                  {"name": "wrong csrf", "id": f"badcsrf-{names.hex}"})
    assert wrong["status"] == 403 and wrong["body"]["error"]["code"] == "csrf_token_invalid", wrong
    for verb, path in (("DELETE", f"/v1/datasources/{names.client_id}/tokens/x"), ("PUT", "/v1/schemas/csrf"),
                       ("POST", f"/v1/datasources/{names.client_id}/disable"), ("DELETE", "/console/session")):
        refused = fetch(verb, path, body={} if verb == "PUT" else None)
        assert refused["status"] == 403 and refused["body"]["error"]["code"] == "csrf_token_missing", (verb, path, refused)
    ids = {s["id"] for s in stack.admin.sources()}
    assert f"nocsrf-{names.hex}" not in ids and f"badcsrf-{names.hex}" not in ids, ids
    assert stack.admin.source(names.client_id)["enabled"] is True
    assert stack.admin.schema("csrf").status_code == 404

    # Reads need only the cookie; the CSRF token the page holds makes a write pass.
    assert fetch("GET", "/v1/datasources")["status"] == 200
    token = fetch("GET", "/console/session")["body"]["csrfToken"]
    ok = fetch("POST", "/v1/datasources", {"X-CSRF-Token": token}, {"name": "with csrf", "id": f"csrf-{names.hex}"})
    assert ok["status"] == 201, ok

    # Without the cookie (another client) nothing passes, CSRF token or not.
    outsider = requests.post(admin_url(stack, "/v1/datasources"), json={"name": "x"}, headers={"X-CSRF-Token": token}, timeout=10)
    assert outsider.status_code == 401 and outsider.json()["error"]["code"] == "unauthorized", outsider.text

    # Bearer clients as before: no cookie, no CSRF token.
    created = stack.admin.create_source("bearer client")
    assert created["writeKey"]

    # Sign-out in the page: back to the sign-in form, the session gone.
    page.click("[data-testid=sign-out]")
    wait_for(page, "!!document.querySelector('#admin-token')", "the sign-in form after sign-out")
    assert fetch("GET", "/v1/datasources")["status"] == 401

    # The cookie's attributes, and sign-out ending the session on the server (a copy of the
    # cookie kept elsewhere reads nothing any more).
    client = requests.Session()
    signed = client.post(admin_url(stack, "/console/session"), json={"token": DEFAULT_ADMIN_TOKEN}, timeout=10)
    assert signed.status_code == 201, signed.text
    set_cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie, set_cookie
    cookie = client.cookies.get("powehi_console")
    assert cookie and client.get(admin_url(stack, "/v1/datasources"), timeout=10).status_code == 200
    out = client.delete(admin_url(stack, "/console/session"), headers={"X-CSRF-Token": signed.json()["csrfToken"]}, timeout=10)
    assert out.status_code == 204, out.text
    replay = requests.get(admin_url(stack, "/v1/datasources"), cookies={"powehi_console": cookie}, timeout=10)
    assert replay.status_code == 401, replay.text
    wrong = requests.post(admin_url(stack, "/console/session"), json={"token": "guess"}, timeout=10)
    assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers, wrong.text
