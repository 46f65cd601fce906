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

-- `event_log`, the view that shows these columns, is created by 0004 (after
-- the replay columns it shows exist).
