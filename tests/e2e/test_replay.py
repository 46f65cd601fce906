"""Issue 16, point 1: replays of rejected events, on real Kafka and ClickHouse.

- events rejected as `unknown_event_type` (sent WITHOUT itemId, so the worker's itemId window
  cannot hide a duplicate); the schema is registered; a dry run counts them and how many would
  now pass; the replay stores each once (`event_log`, `events FINAL`, plain counts after
  OPTIMIZE FINAL, the profile tables); events still invalid stay rejected with their new
  reasons; the event log (view and API) shows a replayed event once, accepted, with when it was
  rejected and replayed; running the replay again adds nothing;
- a replay whose gateway is killed with kill -9 half-way (slowed by POWEHI_REPLAY_PAUSE_MS),
  then requested again of a new gateway, while the worker is stopped so both runs' records
  reach it: each event is stored once, although many were sent twice;
- bad replay requests get specific JSON errors; unknown data sources and jobs 404.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

from admin_support import Admin, page_all, seg
from e2e_support import (
    assert_error,
    assert_profile_counts_exact,
    ch_exec,
    ch_query,
    ch_scalar,
    event,
    post,
    sql_str,
    wait_group_caught_up,
    wait_until,
)

PURCHASE = {
    "properties": [
        {"name": "sku", "type": "string", "required": True, "profileProperty": "lastSku"},
        {"name": "qty", "type": "integer", "required": True},
    ],
}


def purchases(scope: str, n: int, *, profile_id: str, start: datetime, invalid: bool = False) -> list[dict]:
    """`n` purchase events without itemId, one second apart from `start`, over 4 sessions;
    `invalid` ones lack the required `qty`."""
    sessions = [f"s-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    out = []
    for i in range(n):
        props = {"sku": f"{'X' if invalid else 'A'}-{i}"} if invalid else {"sku": f"A-{i}", "qty": i}
        ts = (start + timedelta(seconds=i)).isoformat(timespec="milliseconds")
        out.append(event(scope, drop=("itemId",), eventType="purchase", sessionId=sessions[i % 4],
                         profileId=profile_id, properties=props, timeStamp=ts))
    return out


def send(gateway, events: list[dict]) -> None:
    for i in range(0, len(events), 100):
        resp = post(gateway, {"events": events[i:i + 100]})
        assert resp.status_code == 200, f"/smile: {resp.status_code} {resp.text[:300]}"


def wait_rejected(db: str, n: int) -> None:
    wait_until(
        lambda: int(ch_scalar(f"SELECT uniqExact(event_id) FROM {db}.rejected_events WHERE event_type = 'purchase'")) >= n,
        60, what=f"{n} rejected purchases",
    )


def replay(admin: Admin, scope: str, body: dict, status: int = 202) -> dict:
    resp = admin.post(f"/v1/datasources/{seg(scope)}/replays", body)
    assert resp.status_code == status, f"replay {body}: {resp.status_code} {resp.text[:500]}"
    return resp.json()


def job(admin: Admin, scope: str, job_id: str) -> dict:
    resp = admin.get(f"/v1/datasources/{seg(scope)}/replays/{seg(job_id)}")
    assert resp.status_code == 200, f"GET job: {resp.status_code} {resp.text[:500]}"
    return resp.json()


def wait_job_done(admin: Admin, scope: str, job_id: str, timeout: float = 90) -> dict:
    """Until the job sent everything and the workers stored every event it sent."""
    return wait_until(
        lambda: (lambda j: j if j["status"] == "completed" and j["pending"] == 0 else None)(job(admin, scope, job_id)),
        timeout, interval=0.5, what=f"replay job {job_id} to complete and be stored",
        describe=lambda: json.dumps(job(admin, scope, job_id)),
    )


def purchase_ids(db: str, table: str, where: str = "1") -> dict:
    rows = ch_query(f"SELECT event_id, count() AS n FROM {db}.{table} WHERE event_type = 'purchase' AND {where} GROUP BY event_id")
    return {r["event_id"]: int(r["n"]) for r in rows}


def optimize(db: str) -> None:
    for table in ("events", "rejected_events"):
        ch_exec(f"OPTIMIZE TABLE {db}.{table} FINAL")


def profile_events(db: str, profile_id: str) -> int:
    return int(ch_scalar(
        f"SELECT uniqExactMerge(events) FROM {db}.profile_stats WHERE profile_id = {sql_str(profile_id)}"
    ) or 0)


def test_replay_stores_rejected_events_once_and_again_adds_nothing(names, start_gateway, start_worker):
    gateway = start_gateway()
    start_worker()
    admin = Admin(gateway)
    scope, db = names.client_id, names.database
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    valid = purchases(scope, 40, profile_id=buyer, start=start)
    invalid = purchases(scope, 5, profile_id=buyer, start=start + timedelta(minutes=1), invalid=True)
    send(gateway, valid + invalid + [event(scope)])  # and one accepted `view`, untouched
    wait_rejected(db, 45)
    rejected_before = {r["event_id"]: r for r in ch_query(
        f"SELECT event_id, received_at_ms, kafka_partition, kafka_offset, toUInt64(inserted_at) * 1000 AS rejected_at_ms "
        f"FROM {db}.rejected_events WHERE event_type = 'purchase'")}
    assert len(rejected_before) == 45

    # Before the schema exists, nothing would pass.
    dry = replay(admin, scope, {"dryRun": True}, status=200)
    assert (dry["matched"], dry["wouldPass"], dry["wouldFail"]) == (45, 0, 45), dry
    assert dry["failing"] == {"unknown_event_type": 45}, dry
    admin.put_schema("purchase", PURCHASE, expect=201)
    dry = replay(admin, scope, {"dryRun": True, "reasonCode": "unknown_event_type", "eventType": "purchase"}, status=200)
    assert (dry["matched"], dry["checked"], dry["wouldPass"], dry["wouldFail"]) == (45, 45, 40, 5), dry
    assert dry["failing"] == {"missing_property": 5} and dry["truncated"] is False, dry
    part = replay(admin, scope, {"dryRun": True, "maxEvents": 10}, status=200)
    assert (part["matched"], part["checked"], part["truncated"]) == (45, 10, True), part
    assert part["wouldPass"] + part["wouldFail"] == 10, part
    assert ch_scalar(f"SELECT count() FROM {db}.events WHERE event_type = 'purchase'") == "0", "a dry run sends nothing"
    too_many = admin.post(f"/v1/datasources/{seg(scope)}/replays", {"maxEvents": 44})
    assert_error(too_many, 400, "too_many_events")
    assert_error(admin.get(f"/v1/datasources/{seg(scope)}/replays/{uuid.uuid4()}"), 404, "not_found")

    first = replay(admin, scope, {"reasonCode": "unknown_event_type", "eventType": "purchase"})
    assert first["status"] in ("running", "completed") and first["matched"] == 45, first
    done = wait_job_done(admin, scope, first["id"])
    assert (done["sent"], done["accepted"], done["rejected"]) == (45, 40, 5), done

    def check_stored_once() -> None:
        log = ch_query(
            f"SELECT event_id, status, reasons, received_at_ms, rejected_at_ms, replayed_at_ms, replay_job, "
            f"kafka_partition, kafka_offset FROM {db}.event_log WHERE event_type = 'purchase'")
        by_id: dict = {}
        for row in log:
            by_id.setdefault(row["event_id"], []).append(row)
        assert set(by_id) == set(rejected_before), "every rejected purchase is in the event log"
        twice = {i: rows for i, rows in by_id.items() if len(rows) != 1}
        assert not twice, f"shown more than once in event_log: {list(twice.items())[:3]}"
        valid_ids = {r["event_id"] for r in ch_query(
            f"SELECT event_id FROM {db}.rejected_events WHERE event_type = 'purchase' AND position(raw, 'qty') > 0")}
        assert len(valid_ids) == 40
        for event_id, (row,) in by_id.items():
            original = rejected_before[event_id]
            assert (row["received_at_ms"], row["kafka_partition"], row["kafka_offset"]) == (
                original["received_at_ms"], original["kafka_partition"], original["kafka_offset"]), row
            assert int(row["replayed_at_ms"]) > 0 and row["replay_job"], row
            if event_id in valid_ids:
                assert row["status"] == "accepted", row
                assert int(row["rejected_at_ms"]) == int(original["rejected_at_ms"]), (row, original)
                assert int(row["rejected_at_ms"]) <= int(row["replayed_at_ms"]), row
            else:
                assert row["status"] == "rejected", row
                codes = {r["code"] for r in json.loads(row["reasons"])}
                assert codes == {"missing_property"}, f"the new reasons: {row['reasons']}"
        assert purchase_ids(db, "events FINAL") == {i: 1 for i in valid_ids}

    check_stored_once()
    optimize(db)
    assert purchase_ids(db, "events") == {i: 1 for i in purchase_ids(db, "events FINAL")}, "plain count after OPTIMIZE"
    assert len(purchase_ids(db, "events")) == 40
    assert profile_events(db, buyer) == 40, "the profile counts the replayed events"
    assert_profile_counts_exact(db)
    profile = admin.get(f"/v1/profiles/{seg(buyer)}").json()
    assert profile["eventCount"] == 40 and profile["properties"].get("lastSku") == "A-39", profile

    # The event-log API: once each, accepted with its rejection and replay times.
    entries = page_all(admin, scope, eventType="purchase", limit="7")
    assert len(entries) == 45 and len({e["eventId"] for e in entries}) == 45, len(entries)
    accepted = [e for e in entries if e["status"] == "accepted"]
    assert len(accepted) == 40
    for entry in accepted:
        assert entry["replayJob"] == first["id"] and entry["rejectedAt"] and entry["replayedAt"], entry
        assert entry["rejectedAt"] <= entry["replayedAt"], entry
    still = page_all(admin, scope, eventType="purchase", status="rejected")
    assert len(still) == 5 and all(e["replayedAt"] and not e.get("rejectedAt") for e in still), still
    assert {r["code"] for e in still for r in e["reasons"]} == {"missing_property"}, still
    assert len(page_all(admin, scope, eventType="purchase", status="accepted")) == 40

    # Again: only the 5 still failing match; nothing is added.
    again = replay(admin, scope, {"reasonCode": "unknown_event_type", "eventType": "purchase"})
    assert again["matched"] == 0, "still-invalid events now fail for missing_property"
    again = replay(admin, scope, {"eventType": "purchase"})
    assert again["matched"] == 5, again
    done = wait_job_done(admin, scope, again["id"])
    assert (done["sent"], done["accepted"], done["rejected"]) == (5, 0, 5), done
    optimize(db)
    check_stored_once()
    assert purchase_ids(db, "events") == {i: 1 for i in purchase_ids(db, "events FINAL")}
    assert profile_events(db, buyer) == 40
    assert_profile_counts_exact(db)
    assert ch_scalar(f"SELECT count() FROM {db}.events WHERE event_type = 'view'") == "1"


def test_a_source_switched_to_accept_replays_unknown_types_untyped(names, start_gateway, start_worker):
    """Unknown types rejected under the default policy; the source switched to
    `unplannedEvents: accept`; a replay (its dry run too) judges them under the policy of now:
    each is stored once, accepted untyped with every property, the policy on its row."""
    gateway = start_gateway()
    start_worker()
    admin = Admin(gateway)
    scope, db = names.client_id, names.database
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    sent = purchases(scope, 12, profile_id=f"buyer-{uuid.uuid4().hex[:6]}", start=start)
    send(gateway, sent)
    wait_rejected(db, 12)
    dry = replay(admin, scope, {"dryRun": True}, status=200)
    assert (dry["matched"], dry["wouldPass"]) == (12, 0), dry
    resp = admin.request("PUT", f"/v1/datasources/{seg(scope)}/policy", json_body={"unplannedEvents": "accept"})
    assert resp.status_code == 200, resp.text
    dry = replay(admin, scope, {"dryRun": True}, status=200)
    assert (dry["matched"], dry["wouldPass"], dry["wouldFail"]) == (12, 12, 0), dry

    first = replay(admin, scope, {"reasonCode": "unknown_event_type"})
    done = wait_job_done(admin, scope, first["id"])
    assert (done["sent"], done["accepted"], done["rejected"]) == (12, 12, 0), done
    optimize(db)
    rows = ch_query(f"SELECT event_id, schema_version, policy, properties FROM {db}.events "
                    f"WHERE event_type = 'purchase'")
    assert len(rows) == 12 and len({r["event_id"] for r in rows}) == 12, rows[:3]
    assert {(r["schema_version"], r["policy"]) for r in rows} == {(0, "accept/trim")}, rows[:3]
    assert sorted(json.loads(r["properties"])["qty"] for r in rows) == list(range(12)), "kept as sent"
    log = page_all(admin, scope, eventType="purchase")
    assert len(log) == 12 and {e["status"] for e in log} == {"accepted"}, log[:2]
    assert all(e["policy"]["unplannedEvents"] == "accept" and e["schemaVersion"] is None for e in log), log[:2]


def test_a_replay_killed_half_way_and_requested_again_stores_each_once(names, start_gateway, start_worker):
    # 10 events a step, a second between steps: 120 events take ~12 s to send.
    slow = {"POWEHI_REPLAY_BATCH_EVENTS": "10", "POWEHI_REPLAY_PAUSE_MS": "1000"}
    gateway = start_gateway(**slow)
    worker = start_worker()
    scope, db = names.client_id, names.database
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    n = 120
    send(gateway, purchases(scope, n, profile_id=buyer, start=datetime.now(timezone.utc) - timedelta(hours=1)))
    wait_rejected(db, n)
    wait_group_caught_up(names.group, names.topic)
    # The worker stops, so what the killed run sent is still unread when the replay is
    # requested again: both runs' records reach the worker.
    worker.terminate()
    assert worker.wait_exit(30) == 0
    admin = Admin(gateway)
    admin.put_schema("purchase", PURCHASE, expect=201)
    first = replay(admin, scope, {"eventType": "purchase"})
    assert first["matched"] == n, first
    half = wait_until(lambda: (lambda j: j if j["sent"] >= 30 else None)(job(admin, scope, first["id"])),
                      60, interval=0.1, what="the first run half-way")
    gateway.kill9()
    assert half["sent"] < n, f"killed too late: {half}"

    gateway = start_gateway(**slow)
    admin = Admin(gateway)
    sent_first = job(admin, scope, first["id"])["sent"]
    assert 30 <= sent_first < n
    second = replay(admin, scope, {"eventType": "purchase"})
    assert second["matched"] == n, f"nothing stored yet, every event matches again: {second}"
    wait_until(lambda: job(admin, scope, second["id"])["status"] == "completed", 90, interval=0.5,
               what="the second run to send everything")
    start_worker()
    done = wait_job_done(admin, scope, second["id"], timeout=120)
    assert (done["sent"], done["accepted"], done["rejected"]) == (n, n, 0), done
    wait_group_caught_up(names.group, names.topic)

    stored = purchase_ids(db, "event_log", "status = 'accepted'")
    assert len(stored) == n and set(stored.values()) == {1}, f"each once in event_log: {stored}"
    assert ch_scalar(f"SELECT count() FROM {db}.event_log WHERE event_type = 'purchase' AND status = 'rejected'") == "0"
    assert purchase_ids(db, "events FINAL") == stored
    plain_before = int(ch_scalar(f"SELECT count() FROM {db}.events WHERE event_type = 'purchase'"))
    optimize(db)
    assert purchase_ids(db, "events") == stored, "plain count after OPTIMIZE FINAL"
    assert profile_events(db, buyer) == n
    assert_profile_counts_exact(db)
    entries = page_all(admin, scope, eventType="purchase", limit="50")
    assert len(entries) == n and {e["status"] for e in entries} == {"accepted"}, len(entries)
    print(f"sent {sent_first} + {n} records for {n} events; {plain_before} rows before OPTIMIZE")
    # The killed run's job reads as interrupted once its state is stale.
    wait_until(lambda: job(admin, scope, first["id"])["status"] == "interrupted", 60, interval=1,
               what="the killed job to read interrupted")


def test_bad_replay_requests_get_specific_errors(names, start_gateway):
    gateway = start_gateway()
    admin = Admin(gateway)
    scope = names.client_id
    path = f"/v1/datasources/{seg(scope)}/replays"
    assert_error(admin.post("/v1/datasources/nope/replays", {}), 404, "not_found")
    assert_error(admin.get(f"{path}/{'x' * 100}"), 404, "not_found")
    assert_error(admin.post(path, {"reasonCode": "scope_mismatch"}), 400, "invalid_request")
    assert_error(admin.post(path, {"reasonCode": 7}), 400, "invalid_json")
    assert_error(admin.post(path, {"eventTyp": "x"}), 400, "invalid_json")
    assert_error(admin.post(path, {"from": "yesterday"}), 400, "invalid_request")
    assert_error(admin.post(path, {"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}), 400, "invalid_request")
    assert_error(admin.post(path, {"maxEvents": 0}), 400, "invalid_request")
    assert_error(admin.post(path, {"maxEvents": 100_001}), 400, "invalid_request")
    assert_error(admin.post(path, {"eventType": "x" * 2000}), 400, "invalid_request")
    assert_error(admin.request("POST", path, data="{nope"), 400, "invalid_json")
    assert_error(admin.post(path, {}, token="wrong-token-123"), 401, "unauthorized")
