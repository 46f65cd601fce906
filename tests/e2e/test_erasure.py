"""Issue 16, point 2: erasure and suppression of a profile, on real Kafka and ClickHouse.

- `suppress_and_delete` of a profile with three anonymous sessions merged into it, while
  events for it (one in a fourth session that identifies as it) wait in Kafka behind a frozen
  worker: afterwards no table holds a row naming the profile or any of its sessions, later
  events for it are dropped and counted (gateway, and worker for a record stamped before the
  suppression), the profile reads 404 (admin API and /context), and the audit record names
  the admin token's id and the outcome. Another profile's rows are the same before and after.
- `delete` alone: the rows go, later events come back.
- `suppress` alone: the rows stay, later events are dropped, the profile reads 404.
- Bad input and repeats: unknown mode, unknown profile, unknown job, no token, a repeat
  while a job runs answers that job.
- A job whose gateway was killed (kill -9) is resumed and finished by another gateway.

Events carry no itemId (the gateway assigns ids).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from admin_support import DEFAULT_ADMIN_TOKEN, Admin
from e2e_support import (
    KAFKA_BROKERS,
    Freezer,
    assert_error,
    ch_query,
    ch_scalar,
    event,
    post,
    sql_str,
    wait_group_caught_up,
    wait_until,
)

GRACE_MS = 1000
JOB_TIMEOUT_S = 120


def gateway_env(names) -> dict:
    return {"POWEHI_CONSUMER_GROUP": names.group, "POWEHI_ERASURE_GRACE_MS": str(GRACE_MS)}


def anon(scope: str, session: str) -> str:
    return f"anon:{scope}:{session}"


def view(scope: str, session: str, profile: str | None = None, event_type: str = "view") -> dict:
    fields = {"sessionId": session, "eventType": event_type}
    if profile is not None:
        fields["profileId"] = profile
    return event(scope, drop=("itemId",), **fields)


def send(gateway, events: list[dict]) -> dict:
    resp = post(gateway, {"events": events})
    assert resp.status_code == 200, resp.text
    return resp.json()


def metric(proc, name: str) -> float:
    return proc.metric(name) or 0.0


def erase(admin: Admin, profile: str, mode: str, expect: int = 202) -> dict:
    resp = admin.post(f"/v1/profiles/{profile}/erasure", {"mode": mode})
    assert resp.status_code == expect, resp.text
    job = resp.json()
    assert resp.headers.get("Location") == f"/v1/erasures/{job['jobId']}", resp.headers
    return job


def job_state(admin: Admin, job_id: str) -> dict:
    resp = admin.get(f"/v1/erasures/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_job(admin: Admin, job_id: str, state: str = "done", timeout: float = JOB_TIMEOUT_S) -> dict:
    last: dict = {}

    def reached() -> bool:
        nonlocal last
        last = job_state(admin, job_id)
        assert last["state"] != "failed" or state == "failed", last
        return last["state"] == state

    wait_until(reached, timeout, interval=0.3, what=f"erasure job {job_id} {state}", describe=lambda: repr(last))
    return last


# --------------------------------------------------------------------------- what the tables hold


def tables(database: str) -> list[str]:
    rows = ch_query(
        f"SELECT name FROM system.tables WHERE database = {sql_str(database)} AND engine LIKE '%MergeTree%' "
        "ORDER BY name"
    )
    return [r["name"] for r in rows]


def readable_columns(database: str, table: str) -> list[str]:
    """Expressions reading every text a row holds: String columns, and the values of argMax
    states (the alias and session tables keep profile ids in those)."""
    rows = ch_query(
        f"SELECT name, type FROM system.columns WHERE database = {sql_str(database)} AND table = {sql_str(table)}"
    )
    out = []
    for r in rows:
        if r["type"] in ("String", "Nullable(String)"):
            out.append(f"ifNull({r['name']}, '')")
        elif r["type"].startswith("AggregateFunction(argMax, String"):
            out.append(f"finalizeAggregation({r['name']})")
    return out


def rows_mentioning(database: str, needles: list[str]) -> dict[str, int]:
    """Per table (but `erasures`, the audit log), rows any text of which contains any needle,
    counted FINAL (merges in between change nothing)."""
    counts = {}
    for table in tables(database):
        if table == "erasures":
            continue
        columns = readable_columns(database, table)
        if not columns:
            continue
        tests = " OR ".join(f"position({c}, {sql_str(n)}) > 0" for c in columns for n in needles)
        counts[table] = int(ch_scalar(f"SELECT count() FROM {database}.{table} FINAL WHERE {tests}"))
    return counts


def orphan_positions(database: str) -> int:
    """Stored positions whose record is in neither event table."""
    pos = "toUInt64(kafka_partition) * 1099511627776 + kafka_offset"
    return int(ch_scalar(
        f"SELECT count() FROM {database}.stored_positions WHERE {pos} NOT IN (SELECT {pos} FROM {database}.events) "
        f"AND {pos} NOT IN (SELECT {pos} FROM {database}.rejected_events)"
    ))


def wait_stored(names, database: str, count_sql: str, expected: int) -> None:
    wait_group_caught_up(names.group, names.topic)
    wait_until(lambda: int(ch_scalar(count_sql)) >= expected, 60, what=count_sql)


def raw_records_naming(topic: str, needle: str) -> list[tuple[bytes | None, bytes]]:
    """The raw topic's records whose envelope contains `needle`, read from the start."""
    consumer = Consumer({"bootstrap.servers": KAFKA_BROKERS, "group.id": f"erasure-test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "log_level": 2})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = list(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        done = {p for p, end in ends.items() if end == 0}
        found = []
        deadline = time.monotonic() + 30
        while len(done) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if needle.encode() in msg.value():
                found.append((msg.key(), msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return found
    finally:
        consumer.close()


# --------------------------------------------------------------------------- 1. suppress_and_delete


def test_suppress_and_delete_leaves_no_row_and_drops_later_events(names, start_gateway, start_worker):
    gateway = start_gateway(**gateway_env(names))
    worker = start_worker()
    admin = Admin(gateway)
    scope, h, db = names.client_id, names.hex, names.database
    p, q = f"user-p-{h}", f"user-q-{h}"
    p_sessions = [f"sp{i}-{h}" for i in range(1, 5)]  # the 4th: P's own, only while frozen
    q_sessions = [f"sq{i}-{h}" for i in range(1, 3)]

    # Three anonymous sessions of P, each identified; one rejected event anonymous in a
    # session of P and one naming P; the same shape for Q.
    batch = []
    for s in p_sessions[:3]:
        batch += [view(scope, s), view(scope, s), view(scope, s, p)]
    batch += [view(scope, p_sessions[0], event_type="unregistered"), view(scope, p_sessions[1], p, "unregistered")]
    for s in q_sessions:
        batch += [view(scope, s), view(scope, s, q)]
    batch += [view(scope, q_sessions[0], event_type="unregistered"), view(scope, q_sessions[1], q, "unregistered")]
    assert send(gateway, batch)["accepted"] == len(batch)
    wait_stored(names, db, f"SELECT count() FROM {db}.events FINAL", 9 + 4)
    wait_stored(names, db, f"SELECT count() FROM {db}.rejected_events FINAL", 4)
    profile = admin.get(f"/v1/profiles/{p}").json()
    assert profile["eventCount"] == 9 and len(profile["mergedIds"]) == 3, profile

    p_needles = [p] + p_sessions
    q_needles = [q] + q_sessions
    q_before = rows_mentioning(db, q_needles)
    q_profile_before = admin.get(f"/v1/profiles/{q}").json()
    p_before = rows_mentioning(db, p_needles)
    for table in ("events", "rejected_events", "profile_stats", "profile_aliases", "profile_members", "sessions"):
        assert p_before.get(table, 0) > 0 and q_before.get(table, 0) > 0, (table, p_before, q_before)

    # Events for P still in Kafka when the erasure is asked: the worker is frozen.
    freezer = Freezer()
    try:
        freezer.stop(worker.popen.pid)
        in_kafka = [view(scope, p_sessions[0]), view(scope, p_sessions[2], p),
                    view(scope, p_sessions[3], p), view(scope, p_sessions[3], p)]
        assert send(gateway, in_kafka)["accepted"] == 4
        job = erase(admin, p, "suppress_and_delete")
        assert job["mode"] == "suppress_and_delete" and job["profileId"] == p, job
        token_id = "sha256:" + hashlib.sha256(DEFAULT_ADMIN_TOKEN.encode()).hexdigest()[:16]
        assert job["requestedBy"] == token_id, job
        # It waits for the frozen worker.
        wait_job(admin, job["jobId"], "draining", timeout=30)
        time.sleep(1)
        assert job_state(admin, job["jobId"])["state"] == "draining"
        # A repeat while it runs answers the same job.
        again = erase(admin, p, "suppress_and_delete", expect=200)
        assert again["jobId"] == job["jobId"], again
    finally:
        freezer.thaw_all()
    done = wait_job(admin, job["jobId"])
    assert done["finishedAt"] and done["outcome"]["rowsFound"]["events"] >= 9, done
    assert done["mergedIds"] >= 3, done

    # No row about P or its sessions anywhere (the audit log aside), no orphan position.
    assert rows_mentioning(db, p_needles) == {t: 0 for t in p_before}, rows_mentioning(db, p_needles)
    assert orphan_positions(db) == 0
    # Q untouched.
    assert rows_mentioning(db, q_needles) == q_before
    assert admin.get(f"/v1/profiles/{q}").json() == q_profile_before

    # P reads 404, by its id and its sessions, on the admin API and /context.
    for pid in (p, anon(scope, p_sessions[0])):
        assert_error(admin.get(f"/v1/profiles/{pid}"), 404, "not_found")
    resp = post(gateway, {"events": []}, path=f"/powehi/context?sessionId={p_sessions[1]}")
    assert_error(resp, 404, "profile_not_found")

    # Later events for P: answered as accepted, dropped by the gateway, counted.
    dropped_before = metric(gateway, "powehi_gateway_events_suppressed_total")
    later = [view(scope, f"new-{h}", p), view(scope, p_sessions[0]), view(scope, p_sessions[1], "someone-else")]
    assert send(gateway, later)["accepted"] == 3
    assert metric(gateway, "powehi_gateway_events_suppressed_total") == dropped_before + 3

    # A record stamped before the suppression (one of P's, as a lagging gateway would have
    # written it) arriving now: the worker drops it, counted.
    records = raw_records_naming(names.topic, p)
    assert records, "no raw record of P to write again"
    worker_dropped = metric(worker, "powehi_worker_events_suppressed_total")
    producer = Producer({"bootstrap.servers": KAFKA_BROKERS})
    key, value = records[0]
    producer.produce(names.topic, key=key, value=value)
    assert producer.flush(10) == 0
    wait_until(lambda: metric(worker, "powehi_worker_events_suppressed_total") > worker_dropped, 30,
               what="the worker to drop the late record")
    wait_group_caught_up(names.group, names.topic)
    assert rows_mentioning(db, p_needles) == {t: 0 for t in p_before}

    # The audit record: what, when, who, outcome; queryable by profile.
    audit = admin.get("/v1/erasures", params={"profileId": p}).json()["erasures"]
    assert [a["jobId"] for a in audit] == [job["jobId"]], audit
    record = audit[0]
    assert record["state"] == "done" and record["requestedBy"] == token_id and record["requestedAt"], record
    row = ch_query(f"SELECT * FROM {db}.erasures FINAL WHERE job_id = {sql_str(job['jobId'])}")
    assert len(row) == 1 and row[0]["state"] == "done" and row[0]["requested_by"] == token_id, row


# --------------------------------------------------------------------------- 2. delete alone


def test_delete_alone_removes_the_rows_and_later_events_come_back(names, start_gateway, start_worker):
    gateway = start_gateway(**gateway_env(names))
    start_worker()
    admin = Admin(gateway)
    scope, h, db = names.client_id, names.hex, names.database
    r, s = f"user-r-{h}", f"sr-{h}"
    send(gateway, [view(scope, s), view(scope, s, r), view(scope, f"other-{h}")])
    wait_stored(names, db, f"SELECT count() FROM {db}.events FINAL", 3)
    assert rows_mentioning(db, [r, s])["events"] == 2

    done = wait_job(admin, erase(admin, r, "delete")["jobId"])
    assert done["outcome"]["rowsFound"]["events"] == 2 and done["mergedIds"] == 1, done
    assert all(n == 0 for n in rows_mentioning(db, [r, s]).values()), rows_mentioning(db, [r, s])
    assert int(ch_scalar(f"SELECT count() FROM {db}.events FINAL")) == 1, "the other session's event stays"
    assert_error(admin.get(f"/v1/profiles/{r}"), 404, "not_found")

    replay_mutations_on_current_clickhouse(db)

    # Not suppressed: later events are stored again.
    send(gateway, [view(scope, f"back-{h}", r)])
    wait_until(lambda: admin.get(f"/v1/profiles/{r}").status_code == 200, 60, what="the profile back")
    assert admin.get(f"/v1/profiles/{r}").json()["eventCount"] == 1
    assert metric(gateway, "powehi_gateway_events_suppressed_total") == 0


def replay_mutations_on_current_clickhouse(database: str) -> None:
    """The mutations the job ran on 18.16, as system.mutations records them, run again on current
    ClickHouse (chdb) against the same migrations, with the gateway's other erasure queries."""
    from chdb import session as chdb_session  # tests/requirements.txt

    from test_migrations import migration_statements

    commands = ch_query(
        f"SELECT table, command FROM system.mutations WHERE database = {sql_str(database)} ORDER BY create_time"
    )
    assert {c["table"] for c in commands} == {
        "stored_positions", "events", "rejected_events", "profile_stats", "profile_properties", "sessions",
        "profile_aliases", "profile_members",
    }, commands
    chdb_db = f"powehi_chdb_{uuid.uuid4().hex[:8]}"
    sess = chdb_session.Session()
    try:
        sess.query(f"CREATE DATABASE {chdb_db}")
        for stmt in migration_statements(chdb_db):
            sess.query(stmt)
        sess.query(f"USE {chdb_db}")
        for c in commands:
            command = c["command"].replace(f"{database}.", f"{chdb_db}.")
            sess.query(f"ALTER TABLE {chdb_db}.{c['table']} {command}")
        selects = [
            f"SELECT count() FROM system.mutations WHERE database = '{chdb_db}' AND table = 'events' "
            "AND is_done = 0 AND position(command, 'job') > 0",
            "SELECT alias_id FROM profile_aliases WHERE alias_id IN (SELECT alias_id FROM profile_members "
            "WHERE profile_id = 'p') GROUP BY alias_id HAVING argMaxMerge(target) = 'p' ORDER BY alias_id",
            "SELECT job_id, profile_id, mode, requested_at_ms, requested_by, state, updated_at_ms, finished_at_ms, "
            "merged_ids, outcome, error FROM erasures FINAL WHERE profile_id = 'p' AND mode = 'delete' "
            "AND state NOT IN ('done', 'failed') ORDER BY requested_at_ms DESC, job_id DESC LIMIT 1",
        ]
        for sql in selects:
            sess.query(sql)
    finally:
        sess.close()


# --------------------------------------------------------------------------- 3. suppress alone


def test_suppress_alone_keeps_the_rows_and_drops_later_events(names, start_gateway, start_worker):
    gateway = start_gateway(**gateway_env(names))
    start_worker()
    admin = Admin(gateway)
    scope, h, db = names.client_id, names.hex, names.database
    u, s = f"user-u-{h}", f"su-{h}"
    send(gateway, [view(scope, s), view(scope, s, u)])
    wait_stored(names, db, f"SELECT count() FROM {db}.events FINAL", 2)
    before = rows_mentioning(db, [u, s])

    job = wait_job(admin, erase(admin, u, "suppress")["jobId"])
    assert job["outcome"]["suppressedIds"] == 2, job
    assert rows_mentioning(db, [u, s]) == before, "suppress alone keeps what is stored"
    assert_error(admin.get(f"/v1/profiles/{u}"), 404, "not_found")
    assert_error(post(gateway, {"events": []}, path=f"/context?sessionId={s}"), 404, "profile_not_found")

    send(gateway, [view(scope, s), view(scope, f"new-{h}", u)])
    assert metric(gateway, "powehi_gateway_events_suppressed_total") == 2
    wait_group_caught_up(names.group, names.topic)
    assert rows_mentioning(db, [u, s]) == before

    # The data source's other sessions are not concerned.
    send(gateway, [view(scope, f"free-{h}")])
    wait_stored(names, db, f"SELECT count() FROM {db}.events FINAL", 3)


# --------------------------------------------------------------------------- 4. bad input


def test_bad_erasure_requests_get_specific_errors(names, start_gateway, start_worker):
    gateway = start_gateway(**gateway_env(names))
    start_worker()
    admin = Admin(gateway)
    h = names.hex
    path = f"/v1/profiles/nobody-{h}/erasure"
    assert_error(admin.post(path, {"mode": "erase"}), 400, "invalid_request")
    assert_error(admin.post(path, {}), 400, "invalid_json")
    assert_error(admin.post(path, {"mode": "delete", "extra": 1}), 400, "invalid_json")
    assert_error(admin.request("POST", path, data="not json"), 400, "invalid_json")
    assert_error(admin.post(path, {"mode": "delete"}, token=None), 401, "unauthorized")
    long_id = "x" * 1025
    assert_error(admin.post(f"/v1/profiles/{long_id}/erasure", {"mode": "delete"}), 400, "invalid_request")
    # Nothing to delete: 404; suppressing an id never seen is allowed (it blocks it from now on).
    assert_error(admin.post(path, {"mode": "delete"}), 404, "not_found")
    job = wait_job(admin, erase(admin, f"nobody-{h}", "suppress")["jobId"])
    assert job["state"] == "done", job
    assert_error(admin.get(f"/v1/erasures/no-such-job-{h}"), 404, "not_found")
    assert_error(admin.get("/v1/erasures", params={"limit": "0"}), 400, "invalid_query")
    assert_error(admin.get("/v1/erasures", params={"nope": "1"}), 400, "invalid_query")
    listed = admin.get("/v1/erasures").json()["erasures"]
    assert [j["jobId"] for j in listed] == [job["jobId"]], listed


# --------------------------------------------------------------------------- 5. a gateway killed mid-job


def test_a_job_whose_gateway_was_killed_is_resumed_by_another(names, start_gateway, start_worker):
    """kill -9 of the gateway while its job waits for a frozen worker: a gateway started after
    it resumes the job once its row is a minute old, and finishes it."""
    gateway = start_gateway(**gateway_env(names))
    worker = start_worker()
    admin = Admin(gateway)
    scope, h, db = names.client_id, names.hex, names.database
    v, s = f"user-v-{h}", f"sv-{h}"
    send(gateway, [view(scope, s), view(scope, s, v)])
    wait_stored(names, db, f"SELECT count() FROM {db}.events FINAL", 2)

    freezer = Freezer()
    try:
        freezer.stop(worker.popen.pid)
        send(gateway, [view(scope, s)])
        job = erase(admin, v, "suppress_and_delete")
        wait_job(admin, job["jobId"], "draining", timeout=30)
        gateway.kill9()
    finally:
        freezer.thaw_all()
    successor = start_gateway(**gateway_env(names))
    admin = Admin(successor)
    assert job_state(admin, job["jobId"])["state"] == "draining", "the job outlives its gateway"
    done = wait_job(admin, job["jobId"], timeout=150)
    assert done["outcome"]["rowsFound"]["events"] >= 2, done
    assert all(n == 0 for n in rows_mentioning(db, [v, s]).values()), rows_mentioning(db, [v, s])
