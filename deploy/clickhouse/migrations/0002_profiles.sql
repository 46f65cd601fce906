-- Profiles, derived from `events` by materialized views only.
--
-- Why this is right with many workers and under replay: `events` holds each
-- Kafka record exactly once (see event-worker/src/replay.rs), and every table
-- below is fed by a materialized view of the INSERTs into `events`, with
-- aggregates that commute (min, max, count, uniqExact, argMax by (event time,
-- event id)). No worker reads a profile to update it, so no two workers can
-- race, and the order in which batches arrive changes nothing. Merges of an
-- anonymous session into an identified profile are aliases, resolved at read.

-- An anonymous session profile merged into the profile its session identified
-- as (an event naming profileId in that session). The latest identification
-- by event time wins, ties broken by event id: read with argMaxMerge(target).
-- (Not named profile_id: an aggregate aliased like the column WHERE reads is
-- refused.)
CREATE TABLE IF NOT EXISTS {database}.profile_aliases
(
    alias_id String,
    target   AggregateFunction(argMax, String, Tuple(UInt64, String))
)
ENGINE = AggregatingMergeTree()
ORDER BY alias_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.profile_aliases_mv TO {database}.profile_aliases AS
SELECT
    concat('anon:', scope, ':', session_id) AS alias_id,
    argMaxState(profile_id, (event_time_ms, event_id)) AS target
FROM {database}.events
WHERE profile_id != concat('anon:', scope, ':', session_id)
GROUP BY alias_id;

-- The same pairs ordered by the surviving profile, to find what merged into
-- one quickly (checked against profile_aliases: an alias can move).
CREATE TABLE IF NOT EXISTS {database}.profile_members
(
    profile_id String,
    alias_id   String
)
ENGINE = ReplacingMergeTree()
ORDER BY (profile_id, alias_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.profile_members_mv TO {database}.profile_members AS
SELECT profile_id, concat('anon:', scope, ':', session_id) AS alias_id
FROM {database}.events
WHERE profile_id != concat('anon:', scope, ':', session_id);

-- First/last seen (event time), event and session counts per profile id.
CREATE TABLE IF NOT EXISTS {database}.profile_stats
(
    profile_id    String,
    first_seen_ms AggregateFunction(min, UInt64),
    last_seen_ms  AggregateFunction(max, UInt64),
    events        AggregateFunction(count),
    sessions      AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
ORDER BY profile_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.profile_stats_mv TO {database}.profile_stats AS
SELECT
    profile_id,
    minState(event_time_ms) AS first_seen_ms,
    maxState(event_time_ms) AS last_seen_ms,
    countState() AS events,
    uniqExactState(concat(scope, ':', session_id)) AS sessions
FROM {database}.events
GROUP BY profile_id;

-- Profile properties: per name, the value of the latest event by event time,
-- ties broken by event id.
CREATE TABLE IF NOT EXISTS {database}.profile_properties
(
    profile_id String,
    name       String,
    value      AggregateFunction(argMax, String, Tuple(UInt64, String))
)
ENGINE = AggregatingMergeTree()
ORDER BY (profile_id, name);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.profile_properties_mv TO {database}.profile_properties AS
SELECT
    profile_id,
    property_name AS name,
    argMaxState(property_value, (event_time_ms, event_id)) AS value
FROM {database}.events
ARRAY JOIN profile_property_names AS property_name, profile_property_values AS property_value
GROUP BY profile_id, property_name;

-- Sessions: which profile, first/last seen, event count.
CREATE TABLE IF NOT EXISTS {database}.sessions
(
    scope         String,
    session_id    String,
    profile_id    AggregateFunction(argMax, String, Tuple(UInt64, String)),
    first_seen_ms AggregateFunction(min, UInt64),
    last_seen_ms  AggregateFunction(max, UInt64),
    events        AggregateFunction(count)
)
ENGINE = AggregatingMergeTree()
ORDER BY (scope, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.sessions_mv TO {database}.sessions AS
SELECT
    scope,
    session_id,
    argMaxState(profile_id, (event_time_ms, event_id)) AS profile_id,
    minState(event_time_ms) AS first_seen_ms,
    maxState(event_time_ms) AS last_seen_ms,
    countState() AS events
FROM {database}.events
GROUP BY scope, session_id;
