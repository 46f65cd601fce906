"""Workers of one consumer group share the raw topic's partitions; when one stops (SIGTERM),
the survivor takes over all of them, and when one joins while the other has an INSERT in
flight, the partitions move only once that INSERT is over: nothing is lost or stored twice."""

from __future__ import annotations

from e2e_support import EventStream, assert_stored_exactly_once, topic_partitions, wait_until

PARTITIONS = 12  # the gateway's default for the raw topic
REQUESTS = 120
EVENTS_PER_REQUEST = 50


def test_survivor_takes_all_partitions_after_sigterm_of_the_other_worker(names, start_gateway, start_worker, store):
    """Both workers own partitions (12 in all); after SIGTERM of one the other owns all 12,
    and every acknowledged event is stored exactly once."""
    gateway = start_gateway()
    assert topic_partitions(names.topic) == PARTITIONS
    first = start_worker()
    second = start_worker(wait="ready")

    def shared() -> tuple | None:
        a, b = first.assigned_partitions(), second.assigned_partitions()
        return (a, b) if a > 0 and b > 0 and a + b == PARTITIONS else None

    split = wait_until(shared, 60, what="both workers to own partitions, 12 in all")
    print(f"partitions owned: {split}")

    stream = EventStream(
        gateway, requests_total=REQUESTS, events_per_request=EVENTS_PER_REQUEST, threads=2, interval=0.2, max_seconds=180
    ).start()
    stream.wait_acked(REQUESTS * EVENTS_PER_REQUEST // 4, timeout=60)
    wait_until(
        lambda: (second.metric("powehi_worker_rows_inserted_total", table="events") or 0) > 0,
        30,
        what="the second worker to insert rows",
    )
    second.terminate()
    assert len(stream.acked) < REQUESTS * EVENTS_PER_REQUEST, "the stream ended before SIGTERM"
    assert second.wait_exit(30) == 0, "SIGTERM is a graceful stop: exit code 0"

    wait_until(lambda: first.assigned_partitions() == PARTITIONS, 60, what="the survivor to own all 12 partitions")
    stream.join(timeout=180)
    assert stream.statuses == {200: REQUESTS}, stream.statuses

    assert_stored_exactly_once(store, names, stream.acked)
    assert first.assigned_partitions() == PARTITIONS


# Under ClickHouse's keep_alive_timeout (3 s): a request held back longer finds its pooled
# connection closed by the server.
INSERT_DELAY_MS = 2000
SLOW_REQUESTS = 400  # about 20 s of traffic: the second worker joins while it flows
SLOW_EVENTS_PER_REQUEST = 20


def test_partitions_move_only_once_the_insert_in_flight_is_over(
    names, start_gateway, start_worker, store, slow_clickhouse
):
    """The first worker writes through a proxy that holds every INSERT back for 2 s, so one
    of its INSERTs is always in flight while it keeps consuming the next batch. A second
    worker joins and takes half of the partitions. The first worker's revoke must wait for
    the INSERT: if it gave the partitions up at once, the second worker would ask ClickHouse
    what is stored before those rows land, read them again and store them twice."""
    gateway = start_gateway()
    slow_url = slow_clickhouse(INSERT_DELAY_MS, only_with="INSERT")
    first = start_worker(POWEHI_CLICKHOUSE_URL=slow_url)
    stream = EventStream(
        gateway,
        requests_total=SLOW_REQUESTS,
        events_per_request=SLOW_EVENTS_PER_REQUEST,
        threads=2,
        interval=0.1,
        max_seconds=180,
    ).start()
    wait_until(
        lambda: (first.metric("powehi_worker_rows_inserted_total", table="events") or 0) > 0,
        60,
        what="the first worker to insert rows through the slow proxy",
    )
    assert len(stream.acked) < SLOW_REQUESTS * SLOW_EVENTS_PER_REQUEST, "the stream ended before the second worker joined"
    second = start_worker(wait="ready")
    wait_until(
        lambda: first.assigned_partitions() > 0 and second.assigned_partitions() > 0,
        60,
        what="both workers to own partitions",
    )

    stream.join(timeout=180)
    assert stream.statuses == {200: SLOW_REQUESTS}, stream.statuses
    assert_stored_exactly_once(store, names, stream.acked)
    assert "revoke waited for the insert in flight" in first.log_path.read_text(), (
        "the rebalance did not meet an INSERT in flight: the test proved nothing"
    )
