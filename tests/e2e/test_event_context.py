"""When an event happened and where it came from (issue 13, points 5 and 6), against a real
gateway, Kafka, worker and ClickHouse:

- clock skew: an event with `sendAt` keeps its timeStamp and gets the corrected time
  `received_at - (sendAt - timeStamp)`; profiles order by the corrected time; an event whose
  time is ahead of the server's clock beyond the tolerance is refused `time_in_future`;
- request context: the client IP (X-Forwarded-For only from a trusted proxy), User-Agent,
  Origin and Referer are stored with accepted and refused events and shown by the event log.
"""

from __future__ import annotations

import json
import time

from admin_support import Admin, time_ms
from e2e_support import VIEW_SCHEMA, data_source, event, post, wait_until
from profile_support import PROFILE_SCHEMA, iso, settle, view_event

HOUR_MS = 3_600_000
SHOP = "https://shop.example"


def now_ms() -> int:
    return int(time.time() * 1000)


def bootstrap(names, schema=VIEW_SCHEMA) -> dict:
    return {
        "dataSources": [data_source(names.client_id, [names.write_key], allowedOrigins=[SHOP])],
        "eventSchemas": [schema],
    }


def test_a_skewed_clock_is_corrected_and_a_future_time_refused(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=bootstrap(names))
    start_worker()
    ds = names.client_id
    sent = now_ms()
    # The device's clock runs an hour ahead; the event happened 5 s before it was sent.
    skewed = event(ds, timeStamp=iso(sent + HOUR_MS - 5_000), sendAt=iso(sent + HOUR_MS))
    # Five minutes ahead without sendAt: within the default tolerance (600 s).
    near = event(ds, timeStamp=iso(sent + 5 * 60_000))
    # An hour ahead and nothing to correct it by; and one that happened an hour after sending.
    ahead = event(ds, timeStamp=iso(sent + HOUR_MS))
    after_sending = event(ds, timeStamp=iso(sent + HOUR_MS), sendAt=iso(sent))

    resp = post(gateway, {"events": [skewed, near, ahead, after_sending]})
    assert resp.status_code == 200, resp.text  # partly refused: the others are acknowledged
    answer = resp.json()
    assert answer["accepted"] == 2, answer
    assert {(e["index"], e["code"]) for e in answer["errors"]} == {(2, "time_in_future"), (3, "time_in_future")}
    messages = {e["index"]: e["message"] for e in answer["errors"]}
    assert "sendAt" in messages[2] and "600 s" in messages[2], messages
    assert "after it was sent" in messages[3], messages

    store.wait_for_ids({skewed["itemId"], near["itemId"]}, timeout=60)
    rows = {r["event_id"]: r for r in store.rows(
        "events", columns="event_id, event_time_ms, sent_at_ms, received_at_ms, corrected_time_ms, "
                          "toUnixTimestamp(corrected_time) AS corrected_s")}
    row = rows[skewed["itemId"]]
    assert row["event_time_ms"] == time_ms(skewed["timeStamp"]), "the timeStamp as sent stays"
    assert row["corrected_time_ms"] == row["received_at_ms"] - 5_000, row
    assert int(row["corrected_s"]) == row["corrected_time_ms"] // 1000, row
    assert abs(row["corrected_time_ms"] - sent) < 60_000, "by the server's clock: about now"
    row = rows[near["itemId"]]
    assert row["corrected_time_ms"] == row["event_time_ms"] == time_ms(near["timeStamp"]), row

    def refused_codes() -> list:
        return [json.loads(r["reasons"])[0]["code"] for r in store.rows("rejected_events", columns="reasons")]

    wait_until(lambda: len(refused_codes()) == 2, 60, what="both refusals recorded")
    assert refused_codes() == ["time_in_future", "time_in_future"]

    # The event log shows both times.
    page = Admin(gateway).events_page(ds, status="accepted")
    shown = {e["eventId"]: e for e in page["events"]}[skewed["itemId"]]
    assert time_ms(shown["eventTime"]) == time_ms(skewed["timeStamp"]), shown
    assert time_ms(shown["correctedTime"]) == rows[skewed["itemId"]]["corrected_time_ms"], shown


def test_the_tolerance_is_configurable(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=bootstrap(names), POWEHI_FUTURE_TOLERANCE_SECONDS="30")
    start_worker()
    ds = names.client_id
    ok = event(ds, timeStamp=iso(now_ms() + 10_000))
    late = event(ds, timeStamp=iso(now_ms() + 120_000))
    resp = post(gateway, {"events": [ok, late]})
    assert resp.status_code == 200, resp.text  # partly refused: the others are acknowledged
    assert [(e["index"], e["code"]) for e in resp.json()["errors"]] == [(1, "time_in_future")]
    assert "30 s" in resp.json()["errors"][0]["message"]
    store.wait_for_ids({ok["itemId"]}, timeout=60)


def test_profiles_take_the_latest_value_by_corrected_time(names, start_gateway, start_worker, store):
    """A device whose clock runs an hour ahead sets `plan` first; a correct device sets it a
    moment later. By the timeStamps as sent the first would be the latest for an hour."""
    gateway = start_gateway(bootstrap=bootstrap(names, PROFILE_SCHEMA))
    start_worker()
    ds, profile = names.client_id, f"p-{names.client_id}"
    sent = now_ms()
    fast_clock = view_event(ds, "s-fast", f"fast-{ds}", sent + HOUR_MS - 1_000, profile, plan="old")
    fast_clock["sendAt"] = iso(sent + HOUR_MS)
    resp = post(gateway, {"events": [fast_clock]})
    assert resp.status_code == 200, resp.text
    store.wait_for_ids({fast_clock["itemId"]}, timeout=60)
    # A moment later, by a device whose clock is right (no sendAt: its timeStamp stands).
    right_clock = view_event(ds, "s-right", f"right-{ds}", now_ms() + 1_000, profile, plan="new")
    resp = post(gateway, {"events": [right_clock]})
    assert resp.status_code == 200, resp.text
    settle(names, store, {fast_clock["itemId"], right_clock["itemId"]})

    answer = Admin(gateway).get(f"/v1/profiles/{profile}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["properties"] == {"plan": "new"}, answer.json()
    assert time_ms(answer.json()["lastSeen"]) == time_ms(right_clock["timeStamp"]), answer.json()


def test_request_context_is_kept_with_every_event(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=bootstrap(names))
    start_worker()
    ds = names.client_id
    page = f"{SHOP}/cart?step=2"
    headers = {"Origin": SHOP, "Referer": page, "User-Agent": "Mozilla/5.0 (e2e) " + "x" * 1000,
               "X-Forwarded-For": "198.51.100.7"}
    good, bad = event(ds), event(ds, drop=("sessionId",))
    resp = post(gateway, {"events": [good, bad]}, headers=headers)
    assert resp.status_code == 200, resp.text  # partly refused: the others are acknowledged
    store.wait_for_ids({good["itemId"]}, timeout=60)
    wait_until(lambda: store.count("rejected_events") == 1, 60, what="the refused event recorded")

    columns = "client_ip, user_agent, origin, referer"
    for table in ("events", "rejected_events"):
        [row] = store.rows(table, columns=columns)
        # No trusted proxy configured: the header is the client's word, the peer is the truth.
        assert row["client_ip"] == "127.0.0.1", (table, row)
        assert row["user_agent"].startswith("Mozilla/5.0 (e2e) x") and len(row["user_agent"]) == 512, (table, row)
        assert (row["origin"], row["referer"]) == (SHOP, page), (table, row)

    shown = {e["eventId"]: e for e in Admin(gateway).events_page(ds)["events"]}
    assert shown[good["itemId"]]["clientIp"] == "127.0.0.1"
    assert shown[good["itemId"]]["origin"] == SHOP and shown[good["itemId"]]["referer"] == page
    rejected = next(e for e in shown.values() if e["status"] == "rejected")
    assert rejected["origin"] == SHOP, rejected

    # A server-side sender sends none of the browser headers: nothing is made up.
    plain = event(ds)
    resp = post(gateway, {"events": [plain]}, headers={"User-Agent": ""})
    assert resp.status_code == 200, resp.text
    store.wait_for_ids({plain["itemId"]}, timeout=60)
    [row] = store.rows("events", f"event_id = '{plain['itemId']}'", columns)
    assert (row["origin"], row["referer"]) == ("", ""), row
    assert "origin" not in {e["eventId"]: e for e in Admin(gateway).events_page(ds)["events"]}[plain["itemId"]]


def test_forwarded_for_is_believed_only_from_trusted_proxies(names, start_gateway, start_worker, store):
    """Behind a trusted proxy (here the test itself, on 127.0.0.1) the client is the rightmost
    address no trusted proxy owns: a value the client put on the left is not believed."""
    gateway = start_gateway(bootstrap=bootstrap(names), POWEHI_TRUSTED_PROXIES="10.0.0.0/8,127.0.0.1")
    start_worker()
    ds = names.client_id
    cases = {
        "203.0.113.10, 198.51.100.7, 10.1.2.3": "198.51.100.7",  # spoofed left entry skipped
        "198.51.100.8": "198.51.100.8",
        "2001:db8::5": "2001:db8::5",
    }
    sent = {}
    for forwarded, client in cases.items():
        ev = event(ds)
        resp = post(gateway, {"events": [ev]}, headers={"X-Forwarded-For": forwarded})
        assert resp.status_code == 200, resp.text
        sent[ev["itemId"]] = client
    no_header = event(ds)
    assert post(gateway, {"events": [no_header]}).status_code == 200
    sent[no_header["itemId"]] = "127.0.0.1"
    store.wait_for_ids(set(sent), timeout=60)
    stored = {r["event_id"]: r["client_ip"] for r in store.rows("events", columns="event_id, client_ip")}
    assert stored == sent
