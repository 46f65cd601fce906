"""A record on the raw topic that is not a valid envelope is recorded as rejected (stage
worker, undecodable_record) and does not stall its partition or the worker."""

from __future__ import annotations

import json
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from e2e_support import KAFKA_BROKERS, event, post, sql_str, wait_until


def read_record(topic: str, partition: int, offset: int):
    """The record the gateway wrote: (key, value, headers)."""
    consumer = Consumer(
        {"bootstrap.servers": KAFKA_BROKERS, "group.id": f"powehi-test-reader-{uuid.uuid4().hex}",
         "enable.auto.commit": False, "log_level": 2}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        msg = wait_until(lambda: consumer.poll(1.0), 20, what=f"record {topic}/{partition}@{offset}")
        assert msg.error() is None, msg.error()
        return msg.key(), msg.value(), msg.headers() or []
    finally:
        consumer.close()


def is_version_name(name: str) -> bool:
    return name.lower() in ("v", "ver") or "version" in name.lower()


def forged_envelopes(key, value: bytes, headers: list) -> list[tuple[str, bytes | None, bytes, list]]:
    """A wrong format version and a version-only envelope, made from a real one.

    The envelope carries a format version (DESIGN.md, proto): a Kafka header or a top-level
    field of a JSON envelope (`v`, `version`, `formatVersion`, …).
    """
    version_headers = [h for h in headers if is_version_name(h[0])]
    try:
        envelope = json.loads(value)
    except ValueError:
        envelope = None
    version_keys = [k for k in envelope if is_version_name(k)] if isinstance(envelope, dict) else []
    if version_headers:
        bumped = [(k, b"9999") if is_version_name(k) else (k, v) for k, v in headers]
        return [("wrong version header", key, value, bumped), ("envelope with no fields", key, b"{}", headers)]
    assert version_keys, f"no format version in the envelope: headers {headers}, value {value[:300]!r}"
    wrong = {**envelope, **{k: 9999 for k in version_keys}}
    only_version = {k: envelope[k] for k in version_keys}
    return [
        ("wrong version field", key, json.dumps(wrong).encode(), headers),
        ("version only, no fields", key, json.dumps(only_version).encode(), headers),
    ]


def produce(topic: str, partition: int, records: list[tuple[str, bytes | None, bytes, list]]) -> list[int]:
    """Produce to an explicit partition; return each record's offset."""
    producer = Producer({"bootstrap.servers": KAFKA_BROKERS, "log_level": 2})
    offsets: dict[int, int] = {}
    for i, (_, key, value, headers) in enumerate(records):

        def delivered(err, msg, i=i):
            assert err is None, err
            offsets[i] = msg.offset()

        producer.produce(topic, value=value, key=key, partition=partition, headers=headers, on_delivery=delivered)
        producer.flush(15)  # one at a time: offsets in order
    assert len(offsets) == len(records), "a poison record was not delivered"
    return [offsets[i] for i in range(len(records))]


def test_poison_records_are_rejected_and_the_partition_keeps_flowing(names, pipeline, store):
    """Each poison record gives one rejected_events row (stage worker, undecodable_record)
    and a later good event on the same partition still arrives."""
    gateway, worker = pipeline
    scope = gateway.creds.client_id
    session = f"poison-{uuid.uuid4().hex[:8]}"  # same key, same partition

    probe = event(scope, sessionId=session)
    assert post(gateway, {"events": [probe]}).status_code == 200
    store.wait_for_ids({probe["itemId"]}, timeout=15)
    (where,) = store.rows("events", f"event_id = {sql_str(probe['itemId'])}", "kafka_partition, kafka_offset")
    partition = where["kafka_partition"]

    key, value, headers = read_record(names.topic, partition, where["kafka_offset"])
    poisons = [("not json", None, b"not json", []), ("JSON but no envelope", None, b'{"hello": "world"}', [])]
    poisons += forged_envelopes(key, value, headers)
    offsets = produce(names.topic, partition, poisons)

    good = event(scope, sessionId=session)
    assert post(gateway, {"events": [good]}).status_code == 200
    store.wait_for_ids({good["itemId"]}, timeout=30)
    (after,) = store.rows("events", f"event_id = {sql_str(good['itemId'])}", "kafka_partition, kafka_offset")
    assert after["kafka_partition"] == partition and after["kafka_offset"] > max(offsets), (after, offsets)

    def poison_rows() -> dict | None:
        rows = store.rows(
            "rejected_events",
            f"kafka_partition = {partition} AND kafka_offset IN ({', '.join(map(str, offsets))})",
            "kafka_offset, stage, reasons, raw",
        )
        return rows if len(rows) >= len(offsets) else None

    rows = wait_until(poison_rows, 30, what=f"{len(offsets)} poison records in rejected_events")
    by_offset: dict[int, list] = {}
    for row in rows:
        by_offset.setdefault(row["kafka_offset"], []).append(row)
    for (what, *_), offset in zip(poisons, offsets, strict=True):
        found = by_offset.get(offset, [])
        assert len(found) == 1, f"{what}: {len(found)} rows at offset {offset}"
        row = found[0]
        assert row["stage"] == "worker", (what, row)
        codes = [r.get("code") for r in json.loads(row["reasons"])]
        assert "undecodable_record" in codes, (what, codes)
    not_json = by_offset[offsets[0]][0]
    assert not_json["raw"] == "not json", f"raw must keep the record's bytes: {not_json['raw']!r}"

    assert worker.alive()
    assert worker.get("/healthz").status_code == 200
    assert worker.metric("powehi_worker_poison_records_total") == len(poisons)
    assert store.count("events") == 2, "no poison record may become an event"
