-- Accepted events, validated against their event schema (schema_version) and
-- trimmed to its declared properties. profile_id is the profile the event
-- belongs to: its profileId, else its session's anonymous profile
-- ('anon:<scope>:<sessionId>'). One row per Kafka record of the raw topic (kafka_partition,
-- kafka_offset identify it; the worker never writes a record twice).
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
    -- names and JSON values, pairwise. Feed profile_properties (0002).
    profile_property_names  Array(String),
    profile_property_values Array(String),
    inserted_at     DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (scope, event_type, event_time, event_id);

-- Events refused by the gateway's envelope checks or rejected by the worker,
-- with machine-readable reasons and the raw event as sent.
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
ENGINE = MergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (scope, received_at, event_id);

-- What analysts read: accepted and rejected events together, with their status.
CREATE VIEW IF NOT EXISTS {database}.event_log AS
SELECT
    event_id, scope, event_type, session_id, profile_id,
    'accepted' AS status,
    event_time, event_time_ms, received_at, received_at_ms,
    properties, '[]' AS reasons, '' AS raw,
    source_id, source_type, target_id, target_type,
    schema_version, kafka_partition, kafka_offset
FROM {database}.events
UNION ALL
SELECT
    event_id, scope, event_type, session_id, profile_id,
    'rejected' AS status,
    event_time, event_time_ms, received_at, received_at_ms,
    '{}' AS properties, reasons, raw,
    '' AS source_id, '' AS source_type, '' AS target_id, '' AS target_type,
    toUInt32(0) AS schema_version, kafka_partition, kafka_offset
FROM {database}.rejected_events;
