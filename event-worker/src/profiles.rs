//! Profiles: how they stay right with many workers and under replay.
//!
//! The worker never reads or updates a profile. Each accepted event row says
//! which profile it belongs to (`profile_id`: its `profileId`, else the
//! anonymous profile `anon:<scope>:<sessionId>` of its session) and which
//! profile properties it sets (schema `profileProperty` mappings, as the arrays
//! `profile_property_names` / `profile_property_values`). Materialized views on
//! `events` (deploy/clickhouse/migrations/0002_profiles.sql) derive everything
//! else inside the same INSERT:
//!
//! - `profile_stats`: min/max event time, count, uniqExact(session) per profile;
//! - `profile_properties`: per property, argMax(value, (event time, event id)),
//!   so the latest event by event time wins whatever the arrival order, and a
//!   tie is broken by event id the same way everywhere;
//! - `profile_aliases` (+ `profile_members`): an event naming a profileId in a
//!   session merges that session's anonymous profile into it (argMax of the
//!   target by (event time, event id): the latest identification wins); reads
//!   resolve aliases and merge the aggregate states of all ids of a profile.
//!
//! Why that is correct: every input row exists exactly once (the replay rules of
//! [`crate::replay`]), every aggregate commutes and is idempotent under merge of
//! parts, and nothing depends on which worker wrote which batch or when. Four
//! workers, one worker, or a worker killed and its partitions replayed all
//! produce the same rows, hence the same profiles. The cost is that profile reads
//! merge states at query time (`…Merge` functions); they are keyed by
//! `profile_id`, the tables' sorting key, so a read touches a few granules.
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
