"""The tracker script (ingest-gateway/assets/powehi.js) in a real browser: Debian's chromium,
headless, on a page of another origin than the gateway (browser_support.TestSite) that loads
/powehi/powehi.js from the gateway, against a real gateway, Kafka, worker and ClickHouse.

What each test proves is in its docstring; every one fails without the tracker's feature it
names. Waits are bounded polls (wait_until); "not retried" is shown by what the next request
holds, not by a pause.
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime

import pytest

from browser_support import Browser, Page, Tap, TestSite
from e2e_support import (
    VIEW_SCHEMA,
    assert_stored_exactly_once,
    ch_query,
    data_source,
    event,
    post,
    sql_str,
    wait_until,
)

PAGE_SCHEMA = {
    "eventType": "page",
    "properties": [{"name": n, "type": "string"} for n in ("url", "path", "title", "referrer")],
}
STORE_TIMEOUT_S = 60
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"

# Config of a tracker that sends only when told to (flush, a full batch, or the page going away).
HOLD = {"batchSize": 100, "flushInterval": 600_000}


@pytest.fixture
def site():
    s = TestSite()
    yield s
    s.close()


def bootstrap(names, site: TestSite, **extra) -> dict:
    """The test's data source, open to the test site's origin only, and the schemas `view`
    and `page`."""
    source = data_source(names.client_id, [names.write_key], allowedOrigins=[site.origin], **extra)
    return {"dataSources": [source], "eventSchemas": [VIEW_SCHEMA, PAGE_SCHEMA]}


def open_tracker(browser: Browser, site: TestSite, gateway, *, host: str | None = None, **cfg) -> Page:
    """A page of the test site that loads the tracker from the gateway and inits it (through
    the snippet's stub, as the README shows) for the gateway's first data source, sending to
    `host` (default: the gateway)."""
    creds = gateway.creds
    cfg = {"clientId": creds.client_id, "writeKey": creds.token, **cfg}
    url = site.url(gateway.url(""), host=host or gateway.url(""), **cfg)
    page = browser.open(url)
    wait_for_tracker(page)
    return page


def wait_for_tracker(page: Page) -> None:
    wait_until(
        lambda: page.eval("window.powehi.version === 1"),
        15,
        what="powehi.js loaded in the page",
        describe=lambda: f"the page's requests and console: {[e for e in page.browser.log() if e['page'] == page.id]}",
    )


def ms(iso: str) -> int:
    """Epoch milliseconds of the tracker's ISO 8601 times (toISOString: UTC, ms)."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def smile_posts(log: list[dict]) -> list[dict]:
    """The tracker's POSTs to the ingest route, in the order they were made, each with its
    answer (`status`, `answer_headers`) when one came, and `events` (its body)."""
    answers = {e["rid"]: e for e in log if e["kind"] == "response"}
    posts = []
    for e in log:
        if e["kind"] == "request" and e["method"] == "POST" and "/smile" in e["url"]:
            answer = answers.get(e["rid"], {})
            posts.append({
                **e,
                "events": json.loads(e["body"])["events"] if e["body"] else None,
                "status": answer.get("status"),
                "answer_headers": answer.get("headers", {}),
            })
    return posts


def stored_queue(page: Page, client_id: str) -> list[str]:
    """itemIds the tracker keeps in localStorage (unacknowledged)."""
    return page.eval(f"(JSON.parse(localStorage.getItem('powehi:{client_id}:queue')) || []).map(e => e.itemId)")


def event_rows(store, ids) -> dict[str, dict]:
    rows = store.rows(
        "events FINAL",
        f"event_id IN ({', '.join(sql_str(i) for i in ids)})",
        "event_id, event_type, session_id, profile_id, properties, item_id, sent_at_ms, event_time_ms",
    )
    return {r["event_id"]: r for r in rows}


def assert_log_once(store, ids: set[str]) -> None:
    """Each id exactly once in the event log, and accepted."""
    rows = ch_query(
        f"SELECT event_id, status, count() AS n FROM {store.db}.event_log "
        f"WHERE event_id IN ({', '.join(sql_str(i) for i in ids)}) GROUP BY event_id, status"
    )
    seen = {r["event_id"]: (r["status"], int(r["n"])) for r in rows}
    assert seen == {i: ("accepted", 1) for i in ids}, f"event_log: {seen}"


def assert_request_context(store, ids: set[str], origin: str, user_agent: str) -> None:
    """The request context the gateway stores with each event: the page's origin and the
    browser's User-Agent (columns `origin`, `user_agent` of `events`)."""
    rows = store.rows(
        "events FINAL", f"event_id IN ({', '.join(sql_str(i) for i in ids)})", "event_id, origin, user_agent"
    )
    assert {r["event_id"] for r in rows} == set(ids), rows
    for r in rows:
        assert r["origin"] == origin, f"origin of {r['event_id']}: {r['origin']!r}, the page's is {origin!r}"
        assert r["user_agent"] == user_agent, f"user_agent of {r['event_id']}: {r['user_agent']!r} != {user_agent!r}"


def test_tracks_batches_and_identifies_each_event_stored_once(names, start_gateway, start_worker, store, browser, site):
    """page/track/identify in a browser: a full batch leaves at once and a partial one when
    its timer fires (no flush called), with JSON headers; every event carries scope, the
    tab's session, timeStamp, sendAt and its own itemId, and is stored exactly once (events
    and event_log); events after identify, also on the next page load, belong to the profile;
    the page event's properties are stored; the stored request context is the page's."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    start_worker()
    page = open_tracker(browser, site, gateway, batchSize=3, flushInterval=1500)

    first = page.eval("[powehi.page(), powehi.track('view', {}, {source: {itemId: 'home', itemType: 'page'}, "
                      "target: {itemId: 'cta', itemType: 'button'}}), powehi.track('view')]")
    store.wait_for_ids(set(first), timeout=STORE_TIMEOUT_S)  # (the second batch's clock starts later)
    page.eval("powehi.identify('user-1')")
    second = page.eval("[powehi.track('view', {note: 'trimmed by the schema'}), powehi.track('view')]")
    ids = set(first + second)
    assert len(ids) == 5 and all(re.fullmatch(UUID4, i) for i in ids), ids
    store.wait_for_ids(ids, timeout=STORE_TIMEOUT_S)

    posts = smile_posts(browser.log())
    assert [[e["itemId"] for e in p["events"]] for p in posts] == [first, second], posts
    assert [p["status"] for p in posts] == [200, 200], posts
    for p in posts:
        assert p["headers"]["content-type"] == "application/json", p["headers"]
        assert p["headers"]["x-client-id"] == names.client_id and p["headers"]["x-client-access-token"] == names.write_key
    # The full batch left at once, the second one when its timer fired (the page's clock:
    # timeStamp when tracked, sendAt when sent).
    assert ms(posts[0]["events"][0]["sendAt"]) - ms(posts[0]["events"][-1]["timeStamp"]) < 1000, posts[0]
    assert ms(posts[1]["events"][0]["sendAt"]) - ms(posts[1]["events"][0]["timeStamp"]) >= 1490, posts[1]
    session = page.eval(f"JSON.parse(sessionStorage.getItem('powehi:{names.client_id}:session')).id")
    for p in posts:
        for e in p["events"]:
            assert e["scope"] == names.client_id and e["sessionId"] == session, e
            assert e["timeStamp"] <= e["sendAt"], e
    assert all("profileId" not in e for e in posts[0]["events"]), posts[0]
    assert all(e["profileId"] == "user-1" for e in posts[1]["events"]), posts[1]

    # The next page load keeps the session (same tab) and the identified profile.
    page.reload()
    wait_for_tracker(page)
    after_reload = page.eval("powehi.track('view')")
    assert page.eval("powehi.flush()") == 0
    ids.add(after_reload)
    assert_stored_exactly_once(store, names, ids, ids_timeout=STORE_TIMEOUT_S)
    assert_log_once(store, ids)

    rows = event_rows(store, ids)
    assert {i: rows[i]["profile_id"] for i in first} == {i: f"anon:{names.client_id}:{session}" for i in first}
    assert {i: rows[i]["profile_id"] for i in second + [after_reload]} == dict.fromkeys(second + [after_reload], "user-1")
    assert {r["session_id"] for r in rows.values()} == {session}
    assert all(r["item_id"] == i and r["sent_at_ms"] is not None for i, r in rows.items()), rows
    page_event = rows[first[0]]
    assert page_event["event_type"] == "page"
    props = json.loads(page_event["properties"])
    assert props["path"] == "/t.html" and props["title"] == "Powehi test page", props
    assert props["url"].startswith(site.origin + "/t.html?") and props["referrer"] == "", props
    assert json.loads(rows[second[0]]["properties"]) == {}, "undeclared properties are trimmed by the worker"

    user_agent = page.eval("navigator.userAgent")
    assert_request_context(store, ids, site.origin, user_agent)


@pytest.fixture
def tap():
    """tap(gateway) -> a Tap recording what reaches the gateway through it."""
    taps: list[Tap] = []

    def start(gateway) -> Tap:
        taps.append(Tap(gateway.addr))
        return taps[-1]

    yield start
    for t in taps:
        t.close()


def beacons(tap: Tap) -> list[dict]:
    return [r for r in tap.seen if r["method"] == "POST" and "writeKey=" in r["path"]]


def test_leaving_or_closing_the_page_sends_the_queued_events_by_beacon_once(
    names, start_gateway, start_worker, store, browser, site, tap
):
    """Events still queued when the page goes away (a long batch interval, no flush) leave by
    sendBeacon when the tab navigates away and when it is closed: a text/plain POST with the
    credentials in its URL, seen on the wire (a recording proxy before the gateway; the
    browser's own log misses requests of a page going away), and each is stored exactly
    once. A beacon has no answer, so its events stay in localStorage: the site's next page
    sends them again and forgets them once acknowledged, and the gateway drops the repeats
    (same itemId and session); a page loaded after resendWindow forgets them unsent."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    start_worker()
    wire = tap(gateway)
    page = open_tracker(browser, site, gateway, host=wire.url, **HOLD)
    left = page.eval("[powehi.track('view'), powehi.track('view'), powehi.page()]")
    assert sorted(stored_queue(page, names.client_id)) == sorted(left)
    assert smile_posts(browser.log()) == [] and beacons(wire) == [], "nothing is sent before the batch interval"
    page.goto("about:blank")

    assert_stored_exactly_once(store, names, set(left), ids_timeout=STORE_TIMEOUT_S)
    sent = wait_until(lambda: beacons(wire), 10, what="the beacon on the wire")
    assert len(sent) == 1 and [r["method"] for r in wire.seen] == ["POST"], wire.seen
    beacon = sent[0]
    assert [e["itemId"] for e in json.loads(beacon["body"])["events"]] == left, beacon
    assert beacon["headers"]["content-type"].startswith("text/plain"), beacon["headers"]
    assert "x-client-access-token" not in beacon["headers"], beacon["headers"]
    assert beacon["path"] == f"/powehi/smile?clientId={names.client_id}&writeKey={names.write_key}", beacon["path"]
    assert beacon["headers"]["origin"] == site.origin and beacon["status"] == 200, beacon

    # The next page of the site finds them unacknowledged and sends them again (by fetch).
    again = open_tracker(browser, site, gateway, host=wire.url, **HOLD)
    wait_until(lambda: stored_queue(again, names.client_id) == [], 15, what="the stored events acknowledged")
    resent = [p for p in smile_posts(browser.log()) if p["page"] == again.id]
    assert [e["itemId"] for p in resent for e in p["events"]] == left and resent[-1]["status"] == 200, resent

    # Closing the tab.
    closed = again.eval("[powehi.track('view'), powehi.track('view')]")
    again.close(run_before_unload=True)
    sent = wait_until(lambda: beacons(wire)[1:], 10, what="the second beacon on the wire")
    assert [e["itemId"] for e in json.loads(sent[0]["body"])["events"]] == closed and sent[0]["status"] == 200, sent
    assert len(beacons(wire)) == 2, beacons(wire)
    assert_stored_exactly_once(store, names, set(left + closed), ids_timeout=STORE_TIMEOUT_S)
    assert_log_once(store, set(left + closed))

    # Past resendWindow (here 0), a beaconed event counts as delivered: forgotten, not resent,
    # since the gateway's dedup window might no longer drop the repeat.
    posts_before = len(wire.seen)
    late = open_tracker(browser, site, gateway, host=wire.url, resendWindow=0, **HOLD)
    assert stored_queue(late, names.client_id) == []
    assert late.eval("powehi.flush()") == 0 and len(wire.seen) == posts_before, wire.seen[posts_before:]


def test_a_queue_over_the_beacon_budget_leaves_in_chunks_and_the_rest_waits_for_the_next_page(
    names, start_gateway, start_worker, store, browser, site, tap
):
    """Beacons carry at most 60 KB each and share the browser's 64 KB budget: a page left with
    five 20 KB events sends one beacon of the first two; the browser refuses the next one, so
    the other three stay in localStorage unmarked. The next page (here past resendWindow)
    sends exactly those three, and forgets the two beaconed ones; each is stored once."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    start_worker()
    wire = tap(gateway)
    page = open_tracker(browser, site, gateway, host=wire.url, **HOLD)
    ids = page.eval("Array.from({length: 5}, () => powehi.track('view', {pad: 'x'.repeat(20000)}))")
    page.goto("about:blank")
    sent = wait_until(lambda: beacons(wire), 10, what="the beacon on the wire")
    assert [e["itemId"] for e in json.loads(sent[0]["body"])["events"]] == ids[:2], [len(b["body"]) for b in sent]
    assert len(sent[0]["body"].encode()) < 60_100, len(sent[0]["body"])

    again = open_tracker(browser, site, gateway, host=wire.url, resendWindow=0, **HOLD)
    wait_until(lambda: stored_queue(again, names.client_id) == [], 15, what="the stored events acknowledged")
    fetched = [json.loads(r["body"])["events"] for r in wire.seen if r["method"] == "POST" and "writeKey=" not in r["path"]]
    assert [[e["itemId"] for e in events] for events in fetched] == [ids[2:]], fetched
    assert len(beacons(wire)) == 1, "one beacon only: the budget refused the second"
    assert_stored_exactly_once(store, names, set(ids), ids_timeout=STORE_TIMEOUT_S)


def test_events_tracked_while_the_gateway_is_down_arrive_once_after_it_is_back(
    names, start_gateway, start_worker, store, browser, site
):
    """The gateway stopped: the tracker retries with backoff (fetch fails), keeps the events
    in localStorage, and a reload meanwhile does not lose them (the new page finds them
    there; powehi.js itself comes from the browser's cache). Started again on the same
    address, the gateway gets every event, each stored once, and the tracker forgets them."""
    boot = bootstrap(names, site)
    gateway = start_gateway(bootstrap=boot)
    start_worker()
    retry = {"flushInterval": 200, "retryDelay": 200, "maxRetryDelay": 1000, "maxRetries": 1000}
    page = open_tracker(browser, site, gateway, **retry)
    before = page.eval("powehi.track('view')")
    assert page.eval("powehi.flush()") == 0
    store.wait_for_ids({before}, timeout=STORE_TIMEOUT_S)

    gateway.terminate()
    gateway.wait_exit(30)
    down = page.eval("[powehi.track('view'), powehi.track('view')]")
    # Sent, failed, and retried (at least twice) while down.
    wait_until(
        lambda: len([e for e in browser.log() if e["kind"] == "failed" and "/smile" in e["url"]]) >= 3,
        15,
        what="three failed sends",
    )
    assert sorted(stored_queue(page, names.client_id)) == sorted(down)

    page.reload()
    wait_for_tracker(page)
    assert sorted(stored_queue(page, names.client_id)) == sorted(down), "lost by the reload"
    after_reload = page.eval("[powehi.track('view'), powehi.track('view')]")
    assert sorted(stored_queue(page, names.client_id)) == sorted(down + after_reload)

    restarted = start_gateway(bootstrap=boot, wait_ready=False, POWEHI_HTTP_ADDR=gateway.addr)
    restarted.addr = gateway.addr
    restarted.wait_ready()
    wait_until(lambda: stored_queue(page, names.client_id) == [], 30, what="every stored event acknowledged")
    assert_stored_exactly_once(store, names, {before, *down, *after_reload}, ids_timeout=STORE_TIMEOUT_S)
    assert_log_once(store, {before, *down, *after_reload})


def test_a_page_of_a_disallowed_origin_is_blocked_by_cors_and_told(
    names, start_gateway, start_worker, store, browser, site, tap
):
    """A data source whose allowedOrigins lacks the page's origin: the preflight is refused
    (403 without a grant, seen on the wire), the browser blocks the POST (a CORS error in the
    console, the request never reaches the gateway), nothing is stored, and once its retries
    are spent the tracker calls onError with the events (status 0: the browser does not tell
    a page why)."""
    boot = bootstrap(names, site)
    boot["dataSources"][0]["allowedOrigins"] = ["https://shop.example"]
    gateway = start_gateway(bootstrap=boot)
    start_worker()
    wire = tap(gateway)
    page = open_tracker(browser, site, gateway, host=wire.url, maxRetries=1, retryDelay=100, **HOLD)
    ids = page.eval("[powehi.track('view'), powehi.track('view')]")
    assert page.eval("powehi.flush()") == 2, "the events wait for their retry"

    reports = wait_until(lambda: page.eval("reports"), 15, what="onError called")
    assert [(r["type"], r["status"], r["code"]) for r in reports] == [("failed", 0, "network_error")], reports
    assert [e["itemId"] for e in reports[0]["events"]] == ids, reports

    cors = [c for c in browser.console() if c["type"] == "error" and "CORS policy" in c["text"]]
    assert cors, f"no CORS error in the console: {browser.console()}"
    assert f"from origin '{site.origin}' has been blocked by CORS policy" in cors[0]["text"], cors[0]
    assert [(r["method"], r["status"]) for r in wire.seen] == [("OPTIONS", 403)] * 2, wire.seen
    assert "access-control-allow-origin" not in wire.seen[0]["answer_headers"], wire.seen[0]

    # Nothing stored: the topic holds only a marker sent without Origin, once it is consumed.
    marker = event(names.client_id)
    assert post(gateway, {"events": [marker]}).status_code == 200
    assert_stored_exactly_once(store, names, {marker["itemId"]}, ids_timeout=STORE_TIMEOUT_S)
    assert store.count("event_log") == 1


def test_refused_events_reach_on_error_and_are_never_sent_again(
    names, start_gateway, start_worker, store, browser, site
):
    """Events the gateway refuses one by one (here a `source` without itemType, a `target`
    that is no object) are final: a 400 all_events_refused, and a 200 whose `errors` name
    some, are each answered once. Each refused event reaches onError with its code; none is
    sent again (the next request holds only new events, and none follows well after the
    retry delay) nor kept in localStorage; the accepted one is stored once."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    start_worker()
    page = open_tracker(browser, site, gateway, retryDelay=100, **HOLD)
    refused = page.eval("[powehi.track('view', {}, {source: {itemId: 'no type'}}), "
                        "powehi.track('view', {}, {target: 'not an object'})]")
    assert page.eval("powehi.flush()") == 0, "a refused batch is settled, not queued for a retry"
    mixed = page.eval("[powehi.track('view', {}, {source: {itemId: 'no type'}}), powehi.track('view')]")
    assert page.eval("powehi.flush()") == 0
    accepted = mixed[1]

    def posted() -> list[tuple]:
        return [(p["status"], [e["itemId"] for e in p["events"]]) for p in smile_posts(browser.log())]

    assert posted() == [(400, refused), (200, mixed)]
    reports = page.eval("reports")
    assert [(r["type"], r["status"], r["code"], [e["itemId"] for e in r["events"]]) for r in reports] == [
        ("refused", 400, "invalid_field", [refused[0]]),
        ("refused", 400, "invalid_field", [refused[1]]),
        ("refused", 200, "invalid_field", [mixed[0]]),
    ], reports
    assert all("itemType" in r["message"] or "target" in r["message"] for r in reports), reports
    assert stored_queue(page, names.client_id) == []

    assert_stored_exactly_once(store, names, {accepted}, ids_timeout=STORE_TIMEOUT_S)
    # Seconds after, far beyond the 100 ms retry delay: still the same two requests.
    assert posted() == [(400, refused), (200, mixed)]


def test_a_batch_refused_whole_is_dropped_reported_and_never_sent_again(names, start_gateway, browser, site):
    """A 4xx that a retry cannot mend (here 401: a wrong or revoked write key) drops the batch:
    reported once to onError as `dropped` with the answer's code, gone from localStorage, and
    never sent again (the next request holds only the next event)."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    page = open_tracker(browser, site, gateway, writeKey="not-the-key", retryDelay=100, **HOLD)
    ids = page.eval("[powehi.track('view'), powehi.track('view')]")
    assert page.eval("powehi.flush()") == 0
    reports = page.eval("reports")
    assert [(r["type"], r["status"], r["code"], [e["itemId"] for e in r["events"]]) for r in reports] == [
        ("dropped", 401, "invalid_credentials", ids)
    ], reports
    assert stored_queue(page, names.client_id) == []
    later = page.eval("powehi.track('view')")
    assert page.eval("powehi.flush()") == 0
    posts = [(p["status"], [e["itemId"] for e in p["events"]]) for p in smile_posts(browser.log())]
    assert posts == [(401, ids), (401, [later])], posts


def test_a_rate_limited_batch_is_retried_after_retry_after_and_stored_once(
    names, start_gateway, start_worker, store, browser, site
):
    """A data source limited to 2 events per second: a batch of 4 is admitted (full bucket)
    and leaves it in debt, the next batch is answered 429 with Retry-After; the tracker keeps
    it queued, sends it again no sooner than Retry-After (its own backoff would be 100 ms)
    with a new sendAt and the same itemId, and each event is stored once; no onError."""
    gateway = start_gateway(bootstrap=bootstrap(names, site, maxEventsPerSecond=2))
    start_worker()
    page = open_tracker(browser, site, gateway, retryDelay=100, **HOLD)
    first = page.eval("[1, 2, 3, 4].map(() => powehi.track('view'))")
    assert page.eval("powehi.flush()") == 0
    late = page.eval("powehi.track('view')")
    assert page.eval("powehi.flush()") == 1, "the 429 leaves the event queued"
    wait_until(lambda: stored_queue(page, names.client_id) == [], 30, what="the rate-limited event acknowledged")

    posts = smile_posts(browser.log())
    assert [(p["status"], [e["itemId"] for e in p["events"]]) for p in posts] == [
        (200, first), (429, [late]), (200, [late])
    ], posts
    limited, retried = posts[1], posts[2]
    retry_after = int(limited["answer_headers"]["retry-after"])
    assert retry_after >= 1, limited["answer_headers"]
    # sendAt is set at each attempt (the page's clock): the retry left Retry-After after the
    # refused attempt at least, so after its answer.
    waited_ms = ms(retried["events"][0]["sendAt"]) - ms(limited["events"][0]["sendAt"])
    assert waited_ms >= retry_after * 1000, f"retried {waited_ms} ms after a Retry-After of {retry_after} s"
    assert page.eval("reports") == []
    assert_stored_exactly_once(store, names, {*first, late}, ids_timeout=STORE_TIMEOUT_S)
    assert_log_once(store, {*first, late})


def test_sessions_renew_when_idle_and_fall_back_to_a_cookie(names, start_gateway, browser, site):
    """The session id: one per tab while events keep coming, a new one after sessionTimeout
    idle and after reset() (which also forgets the profile); without sessionStorage a
    first-party cookie keeps it; without crypto.randomUUID (insecure contexts) ids are still
    version 4 UUIDs. Read from the tracker's queue (nothing is sent)."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    page = open_tracker(browser, site, gateway, sessionTimeout=60_000, **HOLD)
    key = f"powehi:{names.client_id}:session"

    def tracked(n: int = 1) -> list[dict]:
        ids = page.eval(f"Array.from({{length: {n}}}, () => powehi.track('view'))")
        queued = {e["itemId"]: e for e in page.eval(f"JSON.parse(localStorage.getItem('powehi:{names.client_id}:queue'))")}
        return [queued[i] for i in ids]

    a, b = tracked(2)
    assert a["sessionId"] == b["sessionId"] and re.fullmatch(UUID4, a["sessionId"]), (a, b)
    # Idle past the timeout: the stored session's last event made older than it.
    page.eval(f"(() => {{ const s = JSON.parse(sessionStorage.getItem('{key}')); s.t -= 60_001; "
              f"sessionStorage.setItem('{key}', JSON.stringify(s)); }})()")
    (c,) = tracked()
    assert c["sessionId"] not in (a["sessionId"], None), c
    page.eval("powehi.identify('user-2')")
    (d,) = tracked()
    assert d["profileId"] == "user-2" and d["sessionId"] == c["sessionId"], d
    page.eval("powehi.reset()")
    (e,) = tracked()
    assert "profileId" not in e and e["sessionId"] != c["sessionId"], e

    page.eval("Object.defineProperty(window, 'sessionStorage', {get() { throw new DOMException('denied', 'SecurityError'); }})")
    f, g = tracked(2)
    assert f["sessionId"] == g["sessionId"] != e["sessionId"], (e, f, g)
    assert page.eval(f"document.cookie.includes(encodeURIComponent('{key}') + '=')"), page.eval("document.cookie")

    page.eval("crypto.randomUUID = undefined")
    (h,) = tracked()
    assert re.fullmatch(UUID4, h["itemId"]), h


def test_a_full_queue_drops_its_oldest_events_and_reports_them(names, start_gateway, browser, site):
    """maxQueue bounds the queue and its localStorage mirror: past it the oldest events are
    dropped, each reported to onError as `overflow`; the rest are sent."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    page = open_tracker(browser, site, gateway, maxQueue=3, **HOLD)
    ids = page.eval("Array.from({length: 5}, () => powehi.track('view'))")
    reports = page.eval("reports")
    assert [(r["type"], r["code"], [e["itemId"] for e in r["events"]]) for r in reports] == [
        ("overflow", "queue_full", [ids[0]]), ("overflow", "queue_full", [ids[1]])
    ], reports
    assert stored_queue(page, names.client_id) == ids[2:]
    assert page.eval("powehi.flush()") == 0
    assert [(p["status"], [e["itemId"] for e in p["events"]]) for p in smile_posts(browser.log())] == [(200, ids[2:])]


def set_visibility(page: Page, state: str) -> None:
    """The tab switched away ('hidden') or back ('visible'), as the page sees it: headless
    chromium has no other tab to show, so document.visibilityState is set and the event
    fired by hand."""
    page.eval(f"Object.defineProperty(document, 'visibilityState', {{value: '{state}', configurable: true}}); "
              "document.dispatchEvent(new Event('visibilitychange'))")


def stored_events(page: Page, client_id: str) -> list[dict]:
    return page.eval(f"JSON.parse(localStorage.getItem('powehi:{client_id}:queue')) || []")


def test_a_tab_switch_beacon_keeps_the_events_and_sends_them_again_by_fetch_when_visible(
    names, start_gateway, start_worker, store, browser, site, tap
):
    """A tab switched away (visibilitychange to hidden) is not a page gone: its beacon's
    events stay queued (stored, marked) and are sent again by fetch when the tab is visible
    again, so a lost beacon (here sendBeacon answering true and sending nothing) loses
    nothing. A beacon that did arrive is repeated by that fetch too, and the worker drops
    the repeat: each event stored once."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    start_worker()
    wire = tap(gateway)
    page = open_tracker(browser, site, gateway, host=wire.url, **HOLD)

    lost = page.eval("[powehi.track('view'), powehi.track('view')]")
    page.eval("window.realBeacon = navigator.sendBeacon; navigator.sendBeacon = () => true")
    set_visibility(page, "hidden")
    stored = stored_events(page, names.client_id)
    assert [e["itemId"] for e in stored] == lost and all(e.get("beacon") for e in stored), stored
    assert smile_posts(browser.log()) == [] and beacons(wire) == []
    set_visibility(page, "visible")
    wait_until(lambda: stored_queue(page, names.client_id) == [], 15, what="the lost beacon's events acknowledged")
    posts = smile_posts(browser.log())
    assert [(p["status"], [e["itemId"] for e in p["events"]]) for p in posts] == [(200, lost)], posts
    assert all("beacon" not in e for e in posts[0]["events"]), posts[0]

    page.eval("navigator.sendBeacon = window.realBeacon")
    arrived = page.eval("[powehi.track('view'), powehi.track('view')]")
    set_visibility(page, "hidden")
    sent = wait_until(lambda: beacons(wire), 10, what="the beacon on the wire")
    assert [e["itemId"] for e in json.loads(sent[0]["body"])["events"]] == arrived and sent[0]["status"] == 200, sent
    store.wait_for_ids(set(arrived), timeout=STORE_TIMEOUT_S)
    assert page.eval("powehi.flush()") == 0, "the beaconed events were still queued"
    posts = [p for p in smile_posts(browser.log()) if "writeKey=" not in p["url"]]  # not the beacon
    assert [(p["status"], [e["itemId"] for e in p["events"]]) for p in posts][1:] == [(200, arrived)], posts
    assert stored_queue(page, names.client_id) == []
    assert len(beacons(wire)) == 1, beacons(wire)
    assert_stored_exactly_once(store, names, set(lost + arrived), ids_timeout=STORE_TIMEOUT_S)
    assert_log_once(store, set(lost + arrived))


def test_no_beacon_while_a_retry_is_pending(names, start_gateway, start_worker, store, browser, site, tap):
    """A batch answered 429 waits for Retry-After: a tab switched away meanwhile sends no
    beacon (it would ignore Retry-After, and a lost one would be taken for delivered), the
    event stays queued and stored unmarked, and the retry delivers it once."""
    gateway = start_gateway(bootstrap=bootstrap(names, site, maxEventsPerSecond=2))
    start_worker()
    wire = tap(gateway)
    page = open_tracker(browser, site, gateway, host=wire.url, retryDelay=100, **HOLD)
    first = page.eval("[1, 2, 3, 4].map(() => powehi.track('view'))")
    assert page.eval("powehi.flush()") == 0
    late = page.eval("powehi.track('view')")
    assert page.eval("powehi.flush()") == 1, "the 429 leaves the event queued"

    set_visibility(page, "hidden")
    stored = stored_events(page, names.client_id)
    assert [e["itemId"] for e in stored] == [late] and "beacon" not in stored[0], stored
    wait_until(lambda: stored_queue(page, names.client_id) == [], 30, what="the rate-limited event acknowledged")
    assert beacons(wire) == [], beacons(wire)
    posts = smile_posts(browser.log())
    assert [(p["status"], [e["itemId"] for e in p["events"]]) for p in posts] == [
        (200, first), (429, [late]), (200, [late])
    ], posts
    assert_stored_exactly_once(store, names, {*first, late}, ids_timeout=STORE_TIMEOUT_S)


def dead_host() -> str:
    """An address where nothing listens: every fetch fails without an answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_events_taken_over_from_storage_lose_their_beacon_mark(
    names, start_gateway, start_worker, store, browser, site, tap
):
    """A page that takes over beaconed events from localStorage answers for them: they are
    stored unmarked, so when that page gives up on them (here `failed`: its gateway address
    is dead), a later page sends them again even past resendWindow instead of deeming them
    delivered; the worker drops the repeat of the beacon."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    start_worker()
    wire = tap(gateway)
    page = open_tracker(browser, site, gateway, host=wire.url, **HOLD)
    left = page.eval("[powehi.track('view'), powehi.track('view')]")
    page.goto("about:blank")
    wait_until(lambda: beacons(wire), 10, what="the beacon on the wire")

    failing = open_tracker(browser, site, gateway, host=dead_host(), maxRetries=0, **HOLD)
    reports = wait_until(lambda: failing.eval("reports"), 15, what="onError called")
    assert [(r["type"], [e["itemId"] for e in r["events"]]) for r in reports] == [("failed", left)], reports
    stored = stored_events(failing, names.client_id)
    assert [e["itemId"] for e in stored] == left and all("beacon" not in e for e in stored), stored

    later = open_tracker(browser, site, gateway, host=wire.url, resendWindow=0, **HOLD)
    wait_until(lambda: stored_queue(later, names.client_id) == [], 15, what="the stored events acknowledged")
    resent = [p for p in smile_posts(browser.log()) if p["page"] == later.id]
    assert [(p["status"], [e["itemId"] for e in p["events"]]) for p in resent] == [(200, left)], resent
    assert_stored_exactly_once(store, names, set(left), ids_timeout=STORE_TIMEOUT_S)
    assert_log_once(store, set(left))


def test_an_event_that_cannot_be_serialized_is_reported_at_once_and_the_rest_are_sent(
    names, start_gateway, start_worker, store, browser, site
):
    """track() copies an event when called: one whose properties cannot become JSON (a
    BigInt, a cycle) is reported to onError as `invalid` at once, returns no itemId and is
    neither queued nor stored, and later flushes still send the others; an object the caller
    changes after track() does not change the queued event."""
    gateway = start_gateway(bootstrap=bootstrap(names, site))
    start_worker()
    page = open_tracker(browser, site, gateway, **HOLD)
    before = page.eval("powehi.track('view')")
    bad = page.eval("[powehi.track('view', {n: 1n}), (() => { const o = {}; o.self = o; "
                    "return powehi.track('view', {}, {source: o}); })()]")
    assert bad == [None, None], bad
    reports = page.eval("reports.map(r => [r.type, r.status, r.code, r.events.length])")
    assert reports == [["invalid", 0, "invalid_event", 1]] * 2, reports
    assert stored_queue(page, names.client_id) == [before]

    after = page.eval("(() => { const p = {n: 1}, s = {itemId: 'a', itemType: 'page'}; "
                      "const id = powehi.track('view', p, {source: s}); p.n = 2; s.itemId = 'b'; return id; })()")
    assert page.eval("powehi.flush()") == 0
    posts = smile_posts(browser.log())
    assert [(p["status"], [e["itemId"] for e in p["events"]]) for p in posts] == [(200, [before, after])], posts
    sent = posts[0]["events"][1]
    assert sent["properties"] == {"n": 1} and sent["source"] == {"itemId": "a", "itemType": "page"}, sent
    last = page.eval("powehi.track('view')")
    assert page.eval("powehi.flush()") == 0
    assert [[e["itemId"] for e in p["events"]] for p in smile_posts(browser.log())][1:] == [[last]]
    assert_stored_exactly_once(store, names, {before, after, last}, ids_timeout=STORE_TIMEOUT_S)
