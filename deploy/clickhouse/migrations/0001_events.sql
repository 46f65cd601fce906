-- Accepted events, validated against their event schema (schema_version) and
-- trimmed to its declared properties. profile_id is the profile the event
-- belongs to: its profileId, else its session's anonymous profile
-- ('anon:<scope>:<sessionId>'). One row per Kafka record of the raw topic
-- (kafka_partition, kafka_offset identify it).
--
-- Idempotent under a repeated write: a worker frozen past its session timeout,
-- or an INSERT that timed out on the client but still ran on the server, can
-- write a record that is also written by someone else. Both copies are the same
-- row (a record decodes to the same row wherever it is decoded, see
-- event-worker/src/replay.rs), they share the sort key, which ends with the
-- record's Kafka position, and the same month partition (received_at is in the
-- record), so ReplacingMergeTree keeps one of them. Until a merge has run, a
-- plain SELECT may see both: exact readers use `FINAL` or `event_log`.
-- Partitioned by arrival month, not event time: producers send any timeStamp, and
-- an INSERT touching many partitions would be split into many non-atomic parts.
-- DateTime columns hold seconds (ClickHouse 18.16 has no DateTime64); the *_ms
-- columns keep millisecond precision as epoch milliseconds.
CREATE TABLE IF NOT EXISTS {database}.events
(
    event_id        String,
    -- The producer's itemId ('' when it sent none); event_id equals it then.
    item_id         String,
    scope           String,
    event_type      String,
    session_id      String,
    profile_id      String,
    event_time      DateTime('UTC'),
    event_time_ms   UInt64,
    sent_at         Nullable(DateTime('UTC')),
    sent_at_ms      Nullable(UInt64),
    received_at     DateTime('UTC'),
    received_at_ms  UInt64,
    properties      String,
    source_id       String,
    source_type     String,
    target_id       String,
    target_type     String,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    schema_version  UInt32,
    -- Profile properties this event sets (schema profileProperty mappings):
    -- names and JSON values, pairwise (the same go to profile_feed, 0002).
    profile_property_names  Array(String),
    profile_property_values Array(String),
    inserted_at     DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (scope, event_type, event_time, event_id, kafka_partition, kafka_offset);

-- Events refused by the gateway's envelope checks or rejected by the worker,
-- with machine-readable reasons and the raw event as sent. Idempotent like
-- `events`: a repeated write collapses on the sort key.
CREATE TABLE IF NOT EXISTS {database}.rejected_events
(
    event_id        String,
    scope           String,
    event_type      String,
    session_id      String,
    profile_id      String,
    event_time      DateTime('UTC'),
    event_time_ms   UInt64,
    received_at     DateTime('UTC'),
    received_at_ms  UInt64,
    stage           String,
    reasons         String,
    raw             String,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    inserted_at     DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (scope, received_at, event_id, kafka_partition, kafka_offset);

-- The analysts' view of both tables, `event_log`, is created by 0003 (after the
-- columns it shows exist).

-- Which Kafka records are stored, sorted by position, for the worker's takeover
-- check (which offsets past the committed one are stored) and its itemId
-- window; both read one Kafka partition's range through the primary key,
-- whatever the size of `events`. Fed by the views below; a push that fails
-- after the events part committed leaves a position out, and the worker then
-- writes that record again, which `events` absorbs (see above).
CREATE TABLE IF NOT EXISTS {database}.stored_positions
(
    kafka_partition UInt32,
    kafka_offset    UInt64,
    received_at     DateTime('UTC'),
    received_at_ms  UInt64,
    scope           String,
    -- The producer's itemId of an accepted event; '' otherwise.
    item_id         String,
    -- 1: the record is in `events`; 0: in `rejected_events`.
    accepted        UInt8
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (kafka_partition, kafka_offset);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.stored_positions_events_mv TO {database}.stored_positions AS
SELECT kafka_partition, kafka_offset, received_at, received_at_ms, scope, item_id, toUInt8(1) AS accepted
FROM {database}.events;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.stored_positions_rejected_mv TO {database}.stored_positions AS
SELECT kafka_partition, kafka_offset, received_at, received_at_ms, scope, '' AS item_id, toUInt8(0) AS accepted
FROM {database}.rejected_events;
