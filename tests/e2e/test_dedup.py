"""Producer retries: an event sent again with the same itemId is stored once.

A producer that got no answer, or a 503 after part of its batch reached Kafka,
sends the batch again. Users rely on the itemId to keep the event log (and the
profile counts derived from it) free of those repeats, whichever worker owns
the partition when the retry arrives.
"""

import time

from e2e_support import ch_scalar, event, post, wait_group_caught_up, wait_until


def _post_ok(gateway, events) -> None:
    resp = post(gateway, {"events": events})
    assert resp.status_code == 200, resp.text


def _duplicates(worker) -> float:
    return worker.metric("powehi_worker_duplicates_total") or 0


def test_a_retried_item_id_is_stored_once(pipeline, store):
    gateway, worker = pipeline
    first = event(gateway.creds.client_id)
    _post_ok(gateway, [first])
    store.wait_for_ids({first["itemId"]}, timeout=30)

    _post_ok(gateway, [first])  # the retry of a request whose answer was lost
    wait_until(lambda: _duplicates(worker) >= 1, 30, what="the retry to be dropped")
    assert store.id_counts(where=f"event_id = '{first['itemId']}'") == {first["itemId"]: 1}


def test_events_without_item_id_are_never_merged(pipeline, store):
    """Without itemId the gateway gives each event its own id: identical bodies stay two events."""
    gateway, worker = pipeline
    anonymous = event(gateway.creds.client_id, drop=("itemId",))
    _post_ok(gateway, [anonymous])
    _post_ok(gateway, [anonymous])
    where = f"session_id = '{anonymous['sessionId']}'"
    wait_until(lambda: store.count("events", where) == 2, 30, what="both events stored")
    assert _duplicates(worker) == 0


def test_the_next_owner_of_a_partition_still_drops_the_retry(pipeline, start_worker, store):
    """The window is loaded from ClickHouse when a worker takes a partition over."""
    gateway, worker = pipeline
    first = event(gateway.creds.client_id)
    _post_ok(gateway, [first])
    store.wait_for_ids({first["itemId"]}, timeout=30)
    worker.terminate()
    assert worker.wait_exit(30) == 0

    successor = start_worker()
    _post_ok(gateway, [first])
    wait_until(lambda: _duplicates(successor) >= 1, 30, what="the new owner to drop the retry")
    assert store.id_counts(where=f"event_id = '{first['itemId']}'") == {first["itemId"]: 1}


def test_a_replay_long_after_judges_retries_by_the_records_times_not_the_clock(
    names, start_gateway, start_worker, store
):
    """A retry dropped when it arrived stays dropped when the partition is replayed after an
    outage longer than the window: the window is measured between the two records' receive
    times, and loaded around the records being replayed, not around the wall clock."""
    from profile_support import rewind_group

    window_s = 3
    gateway = start_gateway()
    worker = start_worker(POWEHI_DEDUP_WINDOW_SECS=str(window_s))
    original = event(gateway.creds.client_id)
    _post_ok(gateway, [original])
    _post_ok(gateway, [original])  # the retry, well within the window
    later = event(gateway.creds.client_id, sessionId=original["sessionId"])
    _post_ok(gateway, [later])
    store.wait_for_ids({original["itemId"], later["itemId"]}, timeout=30)
    wait_until(lambda: _duplicates(worker) >= 1, 30, what="the retry to be dropped")

    # An outage longer than the window, then every record of the topic read again, with
    # nothing to tell the worker the retry was dropped but the window.
    worker.kill9()
    worker.wait_exit(10)
    time.sleep(window_s + 2)
    rewind_group(names.group, names.topic)
    replayer = start_worker(POWEHI_DEDUP_WINDOW_SECS=str(window_s))
    wait_group_caught_up(names.group, names.topic, timeout=60)
    assert _duplicates(replayer) == 1, "the replayed retry must be dropped again"
    assert store.id_counts(where=f"event_id = '{original['itemId']}'") == {original["itemId"]: 1}
    assert int(ch_scalar(f"SELECT count() FROM {names.database}.event_log WHERE event_id = '{original['itemId']}'")) == 1
