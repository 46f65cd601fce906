-- Erasure jobs (POST /v1/profiles/{id}/erasure): the job store and the audit
-- log at once. Each state change of a job is a new row with a later
-- `updated_at_ms`; ReplacingMergeTree keeps the latest (read with FINAL), so
-- the table never loses a job whatever gateway ran it, and survives it.
-- What a row holds: what was asked (profile, mode), when, by which admin token
-- (`requested_by`, a fingerprint of the token, never the token), how far the
-- job went and its outcome (counts, never the erased data). Erasure itself
-- never deletes from this table. Not partitioned: retention never drops it.
CREATE TABLE IF NOT EXISTS {database}.erasures
(
    job_id          String,
    profile_id      String,
    mode            String,
    requested_at_ms UInt64,
    requested_by    String,
    -- pending, suppressing, draining, deleting, done, failed
    state           String,
    -- Also the job's heartbeat while it runs: a job not done whose row is
    -- older than a minute lost its gateway and is resumed by another.
    updated_at_ms   UInt64,
    finished_at_ms  UInt64,
    -- How many anonymous session profiles merged into the profile it covered.
    merged_ids      UInt32,
    -- JSON object: what each step did (rows found per table, rounds).
    outcome         String,
    error           String
)
ENGINE = ReplacingMergeTree(updated_at_ms)
ORDER BY job_id;
