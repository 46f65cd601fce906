-- Profiles, derived from accepted events by materialized views only.
--
-- Why this is right with many workers, under replay and under repeated writes:
-- the views hang off `profile_feed`, a Null table the worker writes each batch's
-- accepted events to right after `events`, before it commits their offsets; a
-- new owner feeds again what it finds stored (a record in `events` therefore
-- reaches every profile table, even when a view push failed half-way: the feed
-- is retried until the whole INSERT succeeds). Every aggregate is idempotent as
-- well as commutative: min, max,
-- uniqExact of the Kafka position (not count), and argMax by (event time,
-- event id, Kafka position), so writing a record twice, in any order, by any
-- worker, changes nothing. No worker reads a profile to update it, so no two
-- workers can race. Merges of an anonymous session into an identified profile
-- are aliases, resolved at read. If a derived table is ever lost or damaged,
-- `powehi-event-worker rebuild-profiles` feeds it again from `events`.

-- What the views read: the columns of `events` profiles need. Stores nothing.
CREATE TABLE IF NOT EXISTS {database}.profile_feed
(
    event_id        String,
    scope           String,
    session_id      String,
    profile_id      String,
    event_time_ms   UInt64,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    profile_property_names  Array(String),
    profile_property_values Array(String)
)
ENGINE = Null;

-- An anonymous session profile merged into the profile its session identified
-- as (an event naming profileId in that session). The latest identification
-- by event time wins, ties broken by event id and Kafka position: read with
-- argMaxMerge(target). (Not named profile_id: an aggregate aliased like the
-- column WHERE reads is refused.)
CREATE TABLE IF NOT EXISTS {database}.profile_aliases
(
    alias_id String,
    target   AggregateFunction(argMax, String, Tuple(UInt64, String, UInt64))
)
ENGINE = AggregatingMergeTree()
ORDER BY alias_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.profile_aliases_mv TO {database}.profile_aliases AS
SELECT
    concat('anon:', scope, ':', session_id) AS alias_id,
    argMaxState(profile_id, (event_time_ms, event_id, toUInt64(kafka_partition) * 1099511627776 + kafka_offset)) AS target
FROM {database}.profile_feed
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
FROM {database}.profile_feed
WHERE profile_id != concat('anon:', scope, ':', session_id);

-- First/last seen (event time), event and session counts per profile id.
-- `events` counts distinct Kafka records (partition * 2^40 + offset): a record
-- written twice is counted once.
CREATE TABLE IF NOT EXISTS {database}.profile_stats
(
    profile_id    String,
    first_seen_ms AggregateFunction(min, UInt64),
    last_seen_ms  AggregateFunction(max, UInt64),
    events        AggregateFunction(uniqExact, UInt64),
    sessions      AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
ORDER BY profile_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.profile_stats_mv TO {database}.profile_stats AS
SELECT
    profile_id,
    minState(event_time_ms) AS first_seen_ms,
    maxState(event_time_ms) AS last_seen_ms,
    uniqExactState(toUInt64(kafka_partition) * 1099511627776 + kafka_offset) AS events,
    uniqExactState(concat(scope, ':', session_id)) AS sessions
FROM {database}.profile_feed
GROUP BY profile_id;

-- Profile properties: per name, the value of the latest event by event time,
-- ties broken by event id and Kafka position.
CREATE TABLE IF NOT EXISTS {database}.profile_properties
(
    profile_id String,
    name       String,
    value      AggregateFunction(argMax, String, Tuple(UInt64, String, UInt64))
)
ENGINE = AggregatingMergeTree()
ORDER BY (profile_id, name);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.profile_properties_mv TO {database}.profile_properties AS
SELECT
    profile_id,
    property_name AS name,
    argMaxState(property_value, (event_time_ms, event_id, toUInt64(kafka_partition) * 1099511627776 + kafka_offset)) AS value
FROM {database}.profile_feed
ARRAY JOIN profile_property_names AS property_name, profile_property_values AS property_value
GROUP BY profile_id, property_name;

-- Sessions: which profile, first/last seen, event count (distinct Kafka records).
CREATE TABLE IF NOT EXISTS {database}.sessions
(
    scope         String,
    session_id    String,
    profile_id    AggregateFunction(argMax, String, Tuple(UInt64, String, UInt64)),
    first_seen_ms AggregateFunction(min, UInt64),
    last_seen_ms  AggregateFunction(max, UInt64),
    events        AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
ORDER BY (scope, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.sessions_mv TO {database}.sessions AS
SELECT
    scope,
    session_id,
    argMaxState(profile_id, (event_time_ms, event_id, toUInt64(kafka_partition) * 1099511627776 + kafka_offset)) AS profile_id,
    minState(event_time_ms) AS first_seen_ms,
    maxState(event_time_ms) AS last_seen_ms,
    uniqExactState(toUInt64(kafka_partition) * 1099511627776 + kafka_offset) AS events
FROM {database}.profile_feed
GROUP BY scope, session_id;
