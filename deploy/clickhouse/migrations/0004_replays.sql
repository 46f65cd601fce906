-- Replays of rejected events (POST /v1/datasources/{id}/replays; the guarantee
-- is argued in event-worker/src/replay.rs).
--
-- A replayed event is stored under the identity of the rejected record it
-- replays: that record's kafka_partition and kafka_offset, its received_at
-- (so the same month partition) and its event_id. Any number of replays of one
-- rejected record therefore collapse to one row in `events` (or, if it fails
-- again, replace the rejected row: same sort key, the last written wins), and
-- the profile aggregates, keyed on the Kafka position, count it once.
--
-- replayed_at_ms: when the replay job sent the event (epoch ms), 0 for an event
-- never replayed. rejected_at_ms (events only): when the rejection it replays
-- was stored (that row's inserted_at, so whole seconds). replay_job: the job's
-- id, '' when not replayed.
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS replayed_at_ms UInt64 DEFAULT 0;
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS rejected_at_ms UInt64 DEFAULT 0;
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS replay_job String DEFAULT '';
ALTER TABLE {database}.rejected_events ADD COLUMN IF NOT EXISTS replayed_at_ms UInt64 DEFAULT 0;
ALTER TABLE {database}.rejected_events ADD COLUMN IF NOT EXISTS replay_job String DEFAULT '';

-- Replay jobs, so a job's state outlives the gateway that runs it: one row per
-- state change (the newest, by updated_at_ms, is the state). What the job sent
-- is counted here; what became of it (accepted, rejected again) is read from
-- `events` and `rejected_events` by replay_job.
CREATE TABLE IF NOT EXISTS {database}.replay_jobs
(
    job_id          String,
    scope           String,
    -- The request's filters, as JSON.
    filters         String,
    -- The config-log position the events are judged at (the gateway's when
    -- the job was created).
    config_position Int64,
    -- running, completed, failed.
    state           String,
    -- Rejected events the filters matched when the job started.
    matched         UInt64,
    -- Of those, how many Kafka has acknowledged.
    sent            UInt64,
    error           String,
    -- Which gateway process runs it (random per process start).
    runner          String,
    created_at_ms   UInt64,
    updated_at_ms   UInt64
)
ENGINE = ReplacingMergeTree(updated_at_ms)
ORDER BY (scope, job_id);

-- What analysts read: accepted and rejected events together, with their status,
-- each Kafka record once (FINAL collapses a repeated write not merged yet).
-- A rejected event's corrected time is its event_time (nothing was corrected).
-- A rejected event a replay stored as accepted is shown once, as accepted (with
-- rejected_at_ms and replayed_at_ms): its rejected row, which keeps the same
-- identity, is left out by an anti-join on the replayed rows of `events`. The
-- subquery reads one column of `events` (replayed_at_ms, almost all zeros) and
-- the positions of the replayed rows; measured in the README ("Replays").
-- A database migrated by an earlier version has an event_log without the columns
-- above: the runner drops it first, and this creates it again (migrations.rs).
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
    rejected_at_ms, replayed_at_ms, replay_job
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
    toUInt64(inserted_at) * 1000 AS rejected_at_ms, replayed_at_ms, replay_job
FROM {database}.rejected_events FINAL
WHERE (kafka_partition, kafka_offset) NOT IN
    (SELECT kafka_partition, kafka_offset FROM {database}.events WHERE replayed_at_ms != 0);
