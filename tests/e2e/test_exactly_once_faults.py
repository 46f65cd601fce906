"""Exactly once under the faults no Kafka-side fencing can stop: a worker frozen past its
session timeout that wakes up with a batch in hand, a ClickHouse server that hangs while
an INSERT runs (the worker's call times out, the server finishes it later), and a repeated
write of every record. Storage and derived tables must be idempotent under a repeated write
of the same Kafka record:

- `event_log` (over `events FINAL` and `rejected_events FINAL`) shows each Kafka record once,
  and `count() FROM events FINAL` is exact (plain `events` may briefly hold a second copy
  until ClickHouse merges it);
- `profile_stats.events` and `sessions.events` count distinct Kafka records
  (uniqExact states, read with uniqExactMerge).

The events carry no itemId (deduplication by itemId would hide a duplicate); each carries a
unique `tag` instead (schema `tick`, see e2e_support.TagStream). Worker settings used:
POWEHI_WORKER_ID (static membership), POWEHI_KAFKA_SESSION_TIMEOUT_MS,
POWEHI_CLICKHOUSE_TIMEOUT_MS.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
import requests

from admin_support import Admin
from e2e_support import (
    CLICKHOUSE_URL,
    Freezer,
    TagStream,
    assert_profile_counts_exact,
    assert_tags_exactly_once,
    ch_exec,
    ch_query,
    ch_scalar,
    clickhouse_server_pid,
    group_lag,
    readers_snapshot,
    tick_bootstrap,
    topic_partitions,
    wait_group_caught_up,
    wait_tags_stored,
    wait_until,
)
from profile_support import rewind_group

PARTITIONS = 12  # the gateway's default for the raw topic
SESSION_TIMEOUT_MS = 6000  # the broker's minimum (group.min.session.timeout.ms)


@pytest.fixture
def freezer(_procs):
    """SIGSTOP/SIGCONT; after `_procs` in setup, so its teardown continues every stopped
    process before `_procs` kills the test's processes."""
    f = Freezer()
    yield f
    f.thaw_all()


@pytest.fixture
def start_stream(_procs):
    """start_stream(gateway, **TagStream_kw) -> a started TagStream, stopped at teardown
    (before `_procs` kills the gateway), also when the test failed half-way."""
    streams: list[TagStream] = []

    def start(gateway, **kw) -> TagStream:
        stream = TagStream(gateway, **kw).start()
        streams.append(stream)
        return stream

    yield start
    for stream in streams:
        stream.stop()
    for stream in streams:
        try:
            stream.join(timeout=70)
        except AssertionError:
            pass


def inserted(worker) -> float:
    return worker.metric("powehi_worker_rows_inserted_total", table="events") or 0


# Generous: other suites stop the shared Kafka broker for up to a minute now and then.
RECOVER_S = 120.0


def wait_inserting(worker, names, timeout: float = RECOVER_S) -> None:
    """Wait until `worker` inserts rows again (it owns partitions and the load reaches it);
    on time-out, say how far behind the group is (a stalled worker, or no traffic)."""
    before = inserted(worker)

    def lag() -> str:
        try:
            return f"group lag (partition, committed, end): {group_lag(names.group, names.topic)}"
        except Exception as exc:  # noqa: BLE001 - Kafka away: say so
            return f"group lag unknown ({exc})"

    wait_until(
        lambda: inserted(worker) > before, timeout, interval=0.1, what=f"{worker.name} to insert rows", describe=lag
    )


def assert_ingestion_unaffected(stream: TagStream, fault: str) -> None:
    """Every request got 200, but for 503 kafka_unavailable (other suites stop the shared
    broker now and then; nothing is acknowledged then): the fault itself never shows."""
    assert stream.statuses[200] > 0, f"nothing acknowledged: {stream.statuses}"
    other = [o for o in stream.outcomes if o.status != 200 and not (o.status == 503 and "kafka_unavailable" in o.detail)]
    assert not other, (
        f"ingestion under {fault}: {len(other)} requests answered neither 200 nor 503 kafka_unavailable, e.g. "
        f"{[(o.status, o.detail) for o in other[:3]]}; statuses {stream.statuses}"
    )


def check_exactly_once(names, store, stream: TagStream) -> set[str]:
    """Once the group caught up and every acknowledged tag is in: each stored once in every
    exact reader, stored ⊇ acknowledged ⊆ sent, profile and session counts exact."""
    assert stream.acked, "nothing was acknowledged"
    wait_tags_stored(names, store.db, stream.acked, timeout=180, replay_timeout=120)
    stored = assert_tags_exactly_once(store.db, stream.acked)
    unexpected = stored - stream.sent
    assert not unexpected, f"tags stored that were never sent: {sorted(unexpected)[:5]}"
    assert_profile_counts_exact(store.db)
    print(f"sent {len(stream.sent)}, acknowledged {len(stream.acked)}, stored {len(stored)} (each once)")
    return stored


# --------------------------------------------------------------------------- a frozen worker

FREEZE_ROUNDS = 5
FREEZE_S = 9.0  # longer than the session timeout: the partitions move to the other worker
FREEZE_MAX_EXTRA_S = 15.0  # stay frozen at most this much longer, until they did move
BETWEEN_ROUNDS_S = 2.0


def test_worker_frozen_past_its_session_timeout_writes_nothing_twice(
    names, start_gateway, start_worker, start_stream, store, freezer
):
    """Two workers share the partitions under continuous load. Five times one of them is
    stopped (SIGSTOP) past its session timeout, so its partitions move to the other, then
    continued: it wakes up holding records it consumed (maybe an INSERT half sent) for
    partitions it no longer owns. Whatever it writes then, every acknowledged event is
    stored once in every exact reader."""
    gateway = start_gateway(bootstrap=tick_bootstrap(names))
    assert topic_partitions(names.topic) == PARTITIONS
    env = {"POWEHI_KAFKA_SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS}
    workers = [
        start_worker(POWEHI_WORKER_ID=f"w0-{names.hex}", **env),
        start_worker(wait="ready", POWEHI_WORKER_ID=f"w1-{names.hex}", **env),
    ]

    def shared() -> tuple | None:
        a, b = (w.assigned_partitions() for w in workers)
        return (a, b) if a > 0 and b > 0 and a + b == PARTITIONS else None

    wait_until(shared, 60, what="both workers to own partitions, 12 in all")
    stream = start_stream(gateway, events_per_request=10, threads=3, interval=0.1, max_seconds=600)
    stream.wait_acked(200, timeout=30)

    moved: list[float | None] = []  # per round: seconds frozen until the other owned all partitions
    started = time.monotonic()
    for rnd in range(FREEZE_ROUNDS):
        sleeper, other = workers[rnd % 2], workers[1 - rnd % 2]
        wait_until(shared, RECOVER_S, what=f"round {rnd}: both workers to own partitions again")
        wait_inserting(sleeper, names)
        took = None
        with freezer.frozen(sleeper.popen.pid):
            frozen_at = time.monotonic()
            time.sleep(FREEZE_S)
            try:
                wait_until(
                    lambda: other.assigned_partitions() == PARTITIONS,
                    FREEZE_MAX_EXTRA_S,
                    interval=0.2,
                    what=f"{other.name} to own all partitions",
                )
                took = time.monotonic() - frozen_at
            except AssertionError:
                pass  # reported after the checks: the round proved nothing
        moved.append(took)
        print(f"round {rnd}: {sleeper.name} frozen; partitions moved: {took}")
        assert sleeper.alive(), f"{sleeper.name} exited ({sleeper.popen.returncode}) after SIGCONT"
        time.sleep(BETWEEN_ROUNDS_S)
    wait_until(shared, RECOVER_S, what="both workers to own partitions after the last round")
    print(f"{FREEZE_ROUNDS} rounds in {time.monotonic() - started:.0f}s")

    stream.stop()
    stream.join()
    assert_ingestion_unaffected(stream, "a frozen worker")
    check_exactly_once(names, store, stream)
    assert all(w.alive() for w in workers)
    assert all(t is not None for t in moved), (
        f"the partitions did not move to the other worker in every round (seconds frozen until they did: "
        f"{moved}): those rounds proved nothing"
    )


# --------------------------------------------------------------------------- a hanging ClickHouse

CLICKHOUSE_TIMEOUT_MS = 3000
CLICKHOUSE_FREEZES = 2
CLICKHOUSE_FREEZE_S = 8.0  # well past POWEHI_CLICKHOUSE_TIMEOUT_MS


def clickhouse_answers() -> bool:
    # Bytes: the answer has no charset, and requests' guess of one can garble "Ok.".
    return requests.get(f"{CLICKHOUSE_URL}/ping", timeout=2).content.strip() == b"Ok."


def test_clickhouse_frozen_past_the_insert_timeout_writes_nothing_twice(
    names, start_gateway, start_worker, start_stream, store, freezer
):
    """Under load, the ClickHouse server is stopped (SIGSTOP) for 8 s, twice, while the
    worker writes with POWEHI_CLICKHOUSE_TIMEOUT_MS=3000: the worker's calls time out while
    the server still holds the INSERT, which it runs once continued. Whatever the worker
    does next (retry, re-check, rebuild), every acknowledged event is stored once in every
    exact reader."""
    gateway = start_gateway(bootstrap=tick_bootstrap(names))
    worker = start_worker(POWEHI_CLICKHOUSE_TIMEOUT_MS=CLICKHOUSE_TIMEOUT_MS, POWEHI_WORKER_ID=f"w-{names.hex}")
    stream = start_stream(gateway, events_per_request=10, threads=3, interval=0.1, max_seconds=600)
    stream.wait_acked(200, timeout=30)
    errors_before = worker.metric("powehi_worker_clickhouse_errors_total") or 0

    for rnd in range(CLICKHOUSE_FREEZES):
        wait_inserting(worker, names)
        pid = clickhouse_server_pid()
        with freezer.frozen(pid):
            print(f"round {rnd}: ClickHouse server (pid {pid}) stopped")
            time.sleep(CLICKHOUSE_FREEZE_S)
        wait_until(clickhouse_answers, 60, what="ClickHouse to answer /ping after SIGCONT")
        assert worker.alive(), f"the worker exited ({worker.popen.returncode}) while ClickHouse hung"
        wait_inserting(worker, names)

    stream.stop()
    stream.join()
    assert_ingestion_unaffected(stream, "a hanging ClickHouse")
    check_exactly_once(names, store, stream)
    assert worker.alive(), "the same worker process must have done the work"
    errors = (worker.metric("powehi_worker_clickhouse_errors_total") or 0) - errors_before
    assert errors > 0, (
        "no ClickHouse call of the worker failed while the server was stopped for "
        f"{CLICKHOUSE_FREEZE_S:.0f}s with POWEHI_CLICKHOUSE_TIMEOUT_MS={CLICKHOUSE_TIMEOUT_MS}: "
        "the timeout did not apply, and the test proved nothing"
    )


# --------------------------------------------------------------------------- every record written twice

REWRITE_REQUESTS = 30
REWRITE_EVENTS_PER_REQUEST = 20


def admin_profiles(admin: Admin, db: str) -> dict:
    """GET /v1/profiles/{id} of every profile id of the events (the admin API's reads)."""
    ids = [r[0] for r in ch_query(f"SELECT DISTINCT profile_id FROM {db}.events", fmt="TabSeparated")]
    answers = {}
    for pid in sorted(ids):
        resp = admin.get(f"/v1/profiles/{quote(pid, safe='')}")
        assert resp.status_code == 200, f"GET /v1/profiles/{pid}: {resp.status_code} {resp.text[:300]}"
        profile = resp.json()
        profile["mergedIds"] = sorted(profile.get("mergedIds") or [])
        answers[pid] = profile
    return answers


def test_a_repeated_write_of_every_record_changes_no_reader(names, start_gateway, start_worker, start_stream, store):
    """Deterministic: every record is written a second time. Once the events are stored the
    worker stops, `stored_positions` is emptied (so the next worker cannot know what is
    stored) and the group rewound to offset 0; a new worker writes every record again.
    `events` then physically holds the copies, but no reader changes: event_log,
    count() FROM events FINAL, profile stats, properties, aliases, sessions, the admin API."""
    gateway = start_gateway(bootstrap=tick_bootstrap(names))
    worker_env = {"POWEHI_WORKER_ID": f"w-{names.hex}", "POWEHI_KAFKA_SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS}
    worker = start_worker(**worker_env)
    stream = start_stream(
        gateway,
        events_per_request=REWRITE_EVENTS_PER_REQUEST,
        threads=2,
        interval=0.0,
        requests_total=REWRITE_REQUESTS,
        max_seconds=120,
    )
    stream.join()
    assert_ingestion_unaffected(stream, "no fault")
    # Every record of the topic is one accepted event: normally all acknowledged, but a
    # request answered 503 (the shared broker stopped by another suite) may have left some.
    n = len(check_exactly_once(names, store, stream))
    assert store.count("events") == n, "before the rewrite every record is stored once"
    admin = Admin(gateway)
    before = readers_snapshot(store.db)
    profiles_before = admin_profiles(admin, store.db)
    assert int(before["count() FROM events FINAL"]) == n

    worker.terminate()
    assert worker.wait_exit(30) == 0, "SIGTERM is a graceful stop: exit code 0"
    ch_exec(f"TRUNCATE TABLE {store.db}.stored_positions")
    assert int(ch_scalar(f"SELECT count() FROM {store.db}.stored_positions")) == 0
    rewind_group(names.group, names.topic, 0)

    rewriter = start_worker(**worker_env)
    wait_group_caught_up(names.group, names.topic, timeout=120)

    # The rewrite happened: the new worker wrote every record again (it could not know any
    # was stored), and `events` physically holds the copies unless ClickHouse merged them.
    rewritten = inserted(rewriter)
    physical = store.count("events")
    merged = int(ch_scalar(
        f"SELECT max(level) FROM system.parts WHERE database = '{store.db}' AND table = 'events' AND active"
    ))
    print(f"rewrite: the new worker inserted {rewritten:.0f} rows; plain events holds {physical}, "
          f"highest part level {merged}")
    assert rewritten == n, (
        f"the worker started after emptying stored_positions inserted {rewritten:.0f} rows into events, "
        f"not all {n} again: the rewrite did not happen and the test proved nothing"
    )
    assert n <= physical <= 2 * n, f"plain events holds {physical} rows after writing {n} records twice"
    if merged == 0:
        assert physical == 2 * n, f"no merge happened, yet plain events holds {physical} rows, not {2 * n}"

    after = readers_snapshot(store.db)
    for reader, value in before.items():
        assert after[reader] == value, (
            f"{reader} changed by a repeated write of every record:\n before {str(value)[:1500]}\n "
            f"after {str(after[reader])[:1500]}"
        )
    assert admin_profiles(admin, store.db) == profiles_before, "GET /v1/profiles/{id} changed by the rewrite"
    assert_tags_exactly_once(store.db, stream.acked)
    assert_profile_counts_exact(store.db)


# --------------------------------------------------------------------------- static membership

REJOIN_S = 3.0


def test_worker_restarted_after_kill_9_gets_its_partitions_back_within_3_s(names, start_gateway, start_worker):
    """With a fixed POWEHI_WORKER_ID (Kafka static membership) a worker killed with SIGKILL
    and started again under the same id owns its partitions within 3 s, not after the session
    timeout (30 s here) of the dead member."""
    start_gateway()
    env = {"POWEHI_WORKER_ID": f"w-{names.hex}", "POWEHI_KAFKA_SESSION_TIMEOUT_MS": 30_000}
    first = start_worker(**env)
    wait_until(lambda: first.assigned_partitions() == PARTITIONS, 30, what="the first worker to own all partitions")
    first.kill9()

    started = time.monotonic()
    second = start_worker(wait=None, **env)
    wait_until(
        lambda: second.assigned_partitions() == PARTITIONS,
        60,
        interval=0.05,
        what="the restarted worker to own all partitions",
    )
    took = time.monotonic() - started
    print(f"the restarted worker owned all {PARTITIONS} partitions {took:.2f}s after its start")
    assert took < REJOIN_S, (
        f"the worker restarted under the same POWEHI_WORKER_ID owned its partitions only {took:.1f}s after "
        f"its start (limit {REJOIN_S:.0f}s): static membership did not apply"
    )


def test_a_worker_whose_consumer_is_fenced_starts_a_new_one_and_stores_everything_once(
    names, start_gateway, start_worker
):
    """librdkafka declares a static member's consumer unusable (FencedInstanceId) when another
    consumer takes its group.instance.id; a worker frozen past its session timeout can meet this
    when it wakes. Provoked here on purpose: a second process joins under the first worker's id
    and is killed. The first worker must start a new consumer, own every partition again and
    store every acknowledged event exactly once, instead of idling forever on a dead consumer."""
    gateway = start_gateway(bootstrap=tick_bootstrap(names))
    env = {"POWEHI_WORKER_ID": f"w-{names.hex}", "POWEHI_KAFKA_SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS}
    worker = start_worker(**env)
    wait_until(lambda: worker.assigned_partitions() == PARTITIONS, 30, what="the worker to own all partitions")
    stream = TagStream(gateway, max_seconds=120)
    stream.start()
    try:
        stream.wait_acked(200, timeout=60)
        usurper = start_worker(wait=None, **env)
        wait_until(lambda: (worker.metric("powehi_worker_consumer_restarts_total") or 0) >= 1, 60,
                   what="the fenced worker to start a new consumer")
        usurper.kill9()
        wait_until(lambda: worker.assigned_partitions() == PARTITIONS, 60,
                   what="the worker to own all partitions again")
        stream.wait_acked(len(stream.acked) + 200, timeout=60)
    finally:
        stream.stop()
        stream.join()
    assert worker.alive()
    wait_tags_stored(names, names.database, stream.acked)
    assert_tags_exactly_once(names.database, stream.acked)
