"""Producer retries: an event sent again with the same itemId is stored once.

A producer that got no answer, or a 503 after part of its batch reached Kafka,
sends the batch again. Users rely on the itemId to keep the event log (and the
profile counts derived from it) free of those repeats, whichever worker owns
the partition when the retry arrives.
"""

from e2e_support import event, post, wait_until


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
