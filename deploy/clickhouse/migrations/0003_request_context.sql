-- When an event happened by the server's clock, and where it came from.
--
-- corrected_time(_ms): the event's timeStamp moved by its producer's clock skew,
-- received_at - (sendAt - timeStamp), when the event has sendAt; else its
-- timeStamp (the rule of Segment's `timestamp` and Snowplow's `derived_tstamp`;
-- proto/src/time.rs). event_time(_ms) keeps the timeStamp as sent. Profiles order
-- by the corrected time. Rows stored before this migration read their
-- event_time as corrected (no correction was known).
--
-- client_ip, user_agent, origin, referer: the request's sender as the gateway saw
-- it (ingest-gateway/src/request_context.rs): the client IP (X-Forwarded-For only
-- through POWEHI_TRUSTED_PROXIES) and the User-Agent, Origin and Referer headers,
-- each bounded; '' when absent and in rows stored before this migration.
--
-- `ADD COLUMN IF NOT EXISTS` is current ClickHouse; for 18.16, which lacks it, the
-- worker's migration runner adds a column only when system.columns lacks it
-- (event-worker/src/store.rs).
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS corrected_time DateTime('UTC') DEFAULT event_time;
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS corrected_time_ms UInt64 DEFAULT event_time_ms;
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS client_ip String DEFAULT '';
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS user_agent String DEFAULT '';
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS origin String DEFAULT '';
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS referer String DEFAULT '';
ALTER TABLE {database}.rejected_events ADD COLUMN IF NOT EXISTS client_ip String DEFAULT '';
ALTER TABLE {database}.rejected_events ADD COLUMN IF NOT EXISTS user_agent String DEFAULT '';
ALTER TABLE {database}.rejected_events ADD COLUMN IF NOT EXISTS origin String DEFAULT '';
ALTER TABLE {database}.rejected_events ADD COLUMN IF NOT EXISTS referer String DEFAULT '';

-- What analysts read: accepted and rejected events together, with their status,
-- each Kafka record once (FINAL collapses a repeated write not merged yet).
-- A rejected event's corrected time is its event_time (nothing was corrected).
-- A database migrated by an earlier version has an event_log without the columns
-- above: the runner drops it first, and this creates it again (store.rs).
CREATE VIEW IF NOT EXISTS {database}.event_log AS
SELECT
    event_id, scope, event_type, session_id, profile_id,
    'accepted' AS status,
    event_time, event_time_ms, corrected_time, corrected_time_ms,
    received_at, received_at_ms,
    properties, '[]' AS reasons, '' AS raw,
    source_id, source_type, target_id, target_type,
    schema_version, kafka_partition, kafka_offset,
    client_ip, user_agent, origin, referer
FROM {database}.events FINAL
UNION ALL
SELECT
    event_id, scope, event_type, session_id, profile_id,
    'rejected' AS status,
    event_time, event_time_ms, event_time AS corrected_time, event_time_ms AS corrected_time_ms,
    received_at, received_at_ms,
    '{}' AS properties, reasons, raw,
    '' AS source_id, '' AS source_type, '' AS target_id, '' AS target_type,
    toUInt32(0) AS schema_version, kafka_partition, kafka_offset,
    client_ip, user_agent, origin, referer
FROM {database}.rejected_events FINAL;
