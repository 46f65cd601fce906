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

-- `event_log` shows these columns, and hides a rejected row a replay stored as
-- accepted, since this migration; its definition is in the newest migration that
-- changes it (0006).
