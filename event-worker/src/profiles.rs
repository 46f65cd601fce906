//! Profiles: how they stay right with many workers, under replay and under a
//! repeated write of the same record.
//!
//! The worker never reads or updates a profile. Each accepted event row says
//! which profile it belongs to (`profile_id`: its `profileId`, else the
//! anonymous profile `anon:<scope>:<sessionId>` of its session) and which
//! profile properties it sets (schema `profileProperty` mappings, as the arrays
//! `profile_property_names` / `profile_property_values`). The writer inserts
//! those columns into the Null table `profile_feed` and materialized views on it
//! (deploy/clickhouse/migrations/0002_profiles.sql) derive everything else:
//!
//! - `profile_stats`: min/max event time, uniqExact of the Kafka position
//!   (the event count) and uniqExact(session) per profile;
//! - `profile_properties`: per property, argMax(value, (event time, event id,
//!   Kafka position)), so the latest event by event time wins whatever the
//!   arrival order, and a tie is broken the same way everywhere;
//! - `profile_aliases` (+ `profile_members`): an event naming a profileId in a
//!   session merges that session's anonymous profile into it (argMax of the
//!   target, as above: the latest identification wins); reads resolve aliases
//!   and merge the aggregate states of all ids of a profile;
//! - `sessions`: per session, its profile (argMax), first/last seen and event
//!   count (uniqExact of the Kafka position).
//!
//! Why that is correct: every aggregate commutes and ignores a repeat of the
//! same input row (uniqExact of the position rather than count), and a record's
//! row is the same whoever decodes it ([`crate::replay`]). So four workers, one
//! worker, a worker killed and its partitions replayed, or a frozen worker that
//! writes a batch it no longer owns all produce the same profiles. The feed is
//! written right after `events` and retried whole on any failure, before the
//! offsets are committed; a new owner feeds again the records it finds stored
//! (the old one may have stopped in between). So a record that is in `events`
//! reaches every profile table: a view push that fails half-way leaves nothing
//! behind once the retry succeeds. `rebuild-profiles` feeds the views again
//! from `events FINAL` (idempotent) if a derived table is lost. A row the views
//! refuse alone (an exception about its data) stays in `events` without its
//! profile update (`powehi_worker_feed_refused_total`).
//! The cost is that profile reads merge states at query time (`…Merge`
//! functions, keyed by `profile_id`, the tables' sorting key, so a read touches
//! a few granules), and uniqExact keeps 8 bytes per event in `profile_stats` and
//! `sessions` where count kept 8 per part.
//!
//! What this module adds is counting, for the metrics.

use std::collections::HashSet;

use prometheus::IntCounterVec;

use crate::rows::EventRow;

/// Profile ids this process remembers for "created"; past this it starts over
/// (the count is per process and approximate, the profiles themselves are not).
const REMEMBERED_PROFILES: usize = 1_000_000;

#[derive(Default)]
pub struct ProfileCounter {
    seen: HashSet<String>,
    /// Anonymous profiles this process saw merged (same bound as `seen`).
    merged: HashSet<String>,
}

impl ProfileCounter {
    /// Counts what an accepted event does to its profile: `created` (first time
    /// this process sees the profile), `updated` (sets profile properties),
    /// `merged` (first time this process sees the session identified, which
    /// merges its anonymous profile into the named one).
    pub fn observe(&mut self, row: &EventRow, counter: &IntCounterVec) {
        if remember(&mut self.seen, &row.profile_id) {
            counter.with_label_values(&["created"]).inc();
        }
        if !row.profile_property_names.is_empty() {
            counter.with_label_values(&["updated"]).inc();
        }
        let anonymous = proto::anonymous_profile_id(&row.scope, &row.session_id);
        if row.profile_id != anonymous && remember(&mut self.merged, &anonymous) {
            counter.with_label_values(&["merged"]).inc();
        }
    }
}

/// Adds `id` to a bounded set; true when it was not there.
fn remember(set: &mut HashSet<String>, id: &str) -> bool {
    if set.contains(id) {
        return false;
    }
    if set.len() >= REMEMBERED_PROFILES {
        set.clear();
    }
    set.insert(id.to_string())
}
