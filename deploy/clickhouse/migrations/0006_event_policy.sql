-- What a sender's library said about an event, and the policy it was ingested under.
--
-- context: the event's `context` object as sent ('' when it had none): what a Segment
-- or RudderStack library reports of where the event happened (library, page, device,
-- locale, …; ingest-gateway/src/segment.rs puts a Segment message's context there).
-- Kept as sent, never validated; bounded by the event's size limit.
--
-- policy: the data source's policy for unplanned events when the gateway accepted the
-- event, as `<unplannedEvents>/<undeclaredProperties>`: `reject/trim` (the reference
-- document's rules, the default), `accept/trim`, `reject/keep`, `accept/keep`
-- (proto/src/config.rs, EventPolicy). An accepted event of schema_version 0 was
-- accepted untyped under `accept`. '' in rows stored before this migration, which
-- were all ingested under `reject/trim`.
--
-- `ADD COLUMN IF NOT EXISTS` as in 0003 (the runner emulates it on 18.16).
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS context String DEFAULT '';
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS policy String DEFAULT '';
ALTER TABLE {database}.rejected_events ADD COLUMN IF NOT EXISTS policy String DEFAULT '';

-- What analysts read: accepted and rejected events together, with their status,
-- each Kafka record once (FINAL collapses a repeated write not merged yet).
-- A rejected event's corrected time is its event_time (nothing was corrected), and
-- its context is in its raw event.
-- A rejected event a replay stored as accepted is shown once, as accepted (with
-- rejected_at_ms and replayed_at_ms, 0004): its rejected row, which keeps the same
-- identity, is left out by an anti-join on the replayed rows of `events`. The
-- subquery reads one column of `events` (replayed_at_ms, almost all zeros) and
-- the positions of the replayed rows; measured in the README ("Replays").
-- A database migrated by an earlier version has an event_log without the newest
-- columns: the runner drops it first, and this creates it again (migrations.rs).
CREATE VIEW IF NOT EXISTS {database}.event_log AS
SELECT
    event_id, scope, event_type, session_id, profile_id,
    'accepted' AS status,
    event_time, event_time_ms, corrected_time, corrected_time_ms,
    received_at, received_at_ms,
    properties, '[]' AS reasons, '' AS raw,
    source_id, source_type, target_id, target_type,
    schema_version, kafka_partition, kafka_offset,
    client_ip, user_agent, origin, referer,
    rejected_at_ms, replayed_at_ms, replay_job,
    context, policy
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
    client_ip, user_agent, origin, referer,
    toUInt64(inserted_at) * 1000 AS rejected_at_ms, replayed_at_ms, replay_job,
    '' AS context, policy
FROM {database}.rejected_events FINAL
WHERE (kafka_partition, kafka_offset) NOT IN
    (SELECT kafka_partition, kafka_offset FROM {database}.events WHERE replayed_at_ms != 0);
