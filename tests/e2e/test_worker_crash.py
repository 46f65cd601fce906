"""A worker killed with SIGKILL mid-stream loses nothing and stores nothing twice once it
is restarted: offsets are committed only after the rows are in ClickHouse, and a replay
skips what is already stored."""

from __future__ import annotations

from e2e_support import EventStream, assert_stored_exactly_once, wait_until

REQUESTS = 200
EVENTS_PER_REQUEST = 100


def inserted_events(worker) -> float:
    return worker.metric("powehi_worker_rows_inserted_total", table="events") or 0


def test_kill_9_of_worker_loses_and_duplicates_nothing(names, start_gateway, start_worker, store):
    """Every acknowledged event is in `events` exactly once after two kill -9 and restarts."""
    gateway = start_gateway()
    worker = start_worker()
    total = REQUESTS * EVENTS_PER_REQUEST
    # Paced to last ~20 s, so the kills land while events stream in.
    stream = EventStream(
        gateway, requests_total=REQUESTS, events_per_request=EVENTS_PER_REQUEST, threads=3, interval=0.25, max_seconds=240
    ).start()

    # Kill 1: mid-stream, while the worker is inserting.
    stream.wait_acked(total // 4, timeout=90)
    wait_until(lambda: inserted_events(worker) > 0, 30, what="the first worker to insert rows")
    acked_at_first_kill = len(stream.acked)
    worker.kill9()
    assert acked_at_first_kill < total, "the stream ended before the first kill: the test did not test a mid-stream kill"

    # Kill 2: as soon as the restarted worker inserts again (stream or backlog).
    worker = start_worker(wait="ready")
    wait_until(lambda: inserted_events(worker) > 0, 120, what="the restarted worker to insert rows")
    worker.kill9()

    worker = start_worker(wait="ready")
    stream.join(timeout=240)
    assert stream.statuses == {200: REQUESTS}, f"a worker crash must not affect ingestion: {stream.statuses}"
    assert len(stream.acked) == total

    assert_stored_exactly_once(store, names, stream.acked, ids_timeout=180, replay_timeout=120)
    skipped = worker.metric("powehi_worker_records_skipped_total")
    assert skipped is not None, "the worker exports no powehi_worker_records_skipped_total"
    print(f"acknowledged {total}, first kill after {acked_at_first_kill}; last worker skipped {skipped:.0f} records")
