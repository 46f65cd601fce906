//! Exactly once: why no reader ever counts a Kafka record twice, and why no
//! acknowledged record is lost. The argument lives here; the modules named
//! keep each step.
//!
//! **What is promised.** Every record of the raw topic is stored as exactly one
//! row as readers see it: `event_log` (and the event-log API), `events FINAL`,
//! `rejected_events FINAL`, and the profile tables (`profile_stats`,
//! `profile_properties`, `profile_aliases`, `profile_members`, `sessions`). Plain
//! `SELECT … FROM events` may briefly see a second, identical copy of a record
//! after one of the faults below, until ClickHouse merges it away.
//!
//! **No loss.** Offsets are committed to Kafka only after the rows below them are
//! written ([`crate::pipeline`], [`crate::batch`]); a failed write is retried until
//! it succeeds, and a row ClickHouse refuses alone becomes a rejection rather
//! than blocking its partition ([`crate::writer`]). So whatever crashes, the
//! records from the last committed offset on are read again and written.
//!
//! **Why a second write is harmless (the guarantee).** No fencing on the Kafka
//! side can stop every stale write: a worker frozen past its session timeout
//! (SIGSTOP, a long GC-like stall) wakes up with its batch in hand, an INSERT
//! the worker gave up on (timeout) still runs on the server, a revoke may give
//! up waiting for an insert. So storage itself absorbs a repeated write:
//! 1. A record decodes to the same row wherever and whenever it is decoded
//!    ([`crate::rows::decode`]), given the same schema version: nothing in a row
//!    comes from the worker's clock (a poison record takes the record's Kafka
//!    timestamp) or from its state.
//! 2. `events` and `rejected_events` are ReplacingMergeTree tables whose sort key
//!    ends with (kafka_partition, kafka_offset), partitioned by the month of
//!    `received_at`, which is in the record: two copies of a record share a part
//!    partition and a key, so merges keep one, and `FINAL` (what `event_log`
//!    reads) or `LIMIT 1 BY kafka_partition, kafka_offset` (what the event-log
//!    API does) shows one before that.
//! 3. Profiles are fed through the Null table `profile_feed`, with aggregates
//!    that ignore a repeat: min, max, argMax by (event time, event id, Kafka
//!    position) and uniqExact of the Kafka position instead of count
//!    ([`crate::profiles`]). A batch's accepted rows go to `events`, then to the
//!    feed; a record's offset is committed only after both, and a record found
//!    stored on takeover is fed again. So every record in `events` reaches every
//!    profile table (a feed whose view push failed half-way is retried whole),
//!    and reaching it twice changes nothing. `event-worker rebuild-profiles`
//!    feeds them again from `events` if a derived table is ever lost.
//!
//! **Keeping repeats rare (efficiency, not correctness).**
//! - On takeover, before writing a partition's first record since it was
//!   assigned at offset `o`, the worker asks `stored_positions` (ordered by
//!   Kafka partition and offset, so a key-range read at any table size) which
//!   offsets `>= o` are stored, and skips exactly those: written, not yet
//!   committed. The exact set, not "the highest stored offset": an INSERT is
//!   atomic only per part, so a crash can leave gaps.
//! - Before each batch is handed to the writer, the worker confirms it still
//!   owns the batch's partitions with a commit the group coordinator refuses
//!   from a stale member ([`crate::pipeline`]); a revoke waits for the insert in
//!   flight ([`crate::writer`]); after a failed INSERT, rows found stored are not
//!   sent again.
//! - What slips past these (a freeze between the check and the write, an
//!   INSERT the server runs after the worker gave up on it, a view push that
//!   failed after `events` committed so `stored_positions` misses a row) is a
//!   second copy that step 2 and 3 absorb.
//!
//! **Replays of rejected events (admin replay jobs).** A job sends a rejected
//! event back to the raw topic as a *new* record, marked with the Kafka
//! position of the rejected one ([`proto::ReplayMarker`]); ingest-gateway's
//! `replays` module sends them. Promised: whatever number of times one
//! rejected event is replayed (a job run twice, a job whose gateway is killed
//! half-way and the replay requested again, two jobs at once), readers see it
//! once: accepted in `events FINAL`, the profile tables and `event_log` (which
//! then hides its rejected row), or still rejected, with the reasons of the
//! latest replay. Why:
//! 4. Identity, not arrival, makes a row: a replay's rows take the rejected
//!    record's `(kafka_partition, kafka_offset)`, its event id, received time
//!    and event (so the same month partition and the same sort key of
//!    `events`, see [`crate::rows`]). Every replay of one rejected record is
//!    therefore, for storage, a repeated write of one record (step 2): copies
//!    in `events` collapse, and the profile aggregates, keyed on the Kafka
//!    position (step 3), count it once. A replay rejected again writes a
//!    `rejected_events` row with the rejected row's sort key, which replaces
//!    it (ReplacingMergeTree without a version keeps the row written last).
//! 5. The verdict is the record's: a replay carries the config position the
//!    job was created at, and the worker judges it by the schemas as of that
//!    stamp (waiting for its follower to reach it), so every decode of one
//!    replay record gives the same row (step 1). Two replays of one event
//!    with different stamps may differ (a schema changed in between); the
//!    last written wins in each table, and `event_log` shows the accepted row
//!    if there is one.
//! 6. The worker's bookkeeping goes by the replay record's own position
//!    ([`crate::rows::EventRow::record`]): its partition's commit, a revoke
//!    dropping its rows, and the takeover guard. No row is ever stored under
//!    a replay record's own position, so the guard never skips one, and a
//!    replay written but not committed when its worker dies is written again
//!    by the next owner, which step 4 absorbs. The guard cannot be fooled the
//!    other way either: the rejected record's position is stored (as
//!    rejected, and after the replay as accepted), and if that original record
//!    is ever read again it is skipped, or decoded by its own stamp as
//!    rejected and not written.
//! 7. The itemId window still applies to a replay (it is an accepted row with
//!    the event's itemId and received time): a replay whose itemId repeats an
//!    event stored within the window before it is a producer retry and is
//!    dropped, the stored copy standing for it; a second replay of an event a
//!    replay stored is dropped the same way, which is harmless (step 4 would
//!    have collapsed it).
//! 8. `event_log` leaves out a rejected row whose identity `events` holds as
//!    replayed (an anti-join on the rows with `replayed_at_ms != 0`, cheap
//!    because it reads one nearly constant column, measured in the README);
//!    the event-log API sorts the accepted row first among equals and serves
//!    one row per identity. A job selects only rejected rows that no replay
//!    has stored as accepted yet, so re-running it sends only what still
//!    fails (and what was in flight).
//!
//! Stated limits: the raw topic must not be recreated under the same database
//! (offsets restart at 0 and old positions would read as stored). A record is
//! validated against the latest schema its worker knows (at least as recent as
//! the one its gateway knew, see [`crate::pipeline`]); if a frozen worker wakes
//! up and writes a record whose event type got a new schema version meanwhile,
//! and the two versions disagree on whether the event is valid, that one record
//! shows once as accepted and once as rejected in `event_log`. A worker frozen
//! past its session timeout while a schema changes under it is the only way.

/// How a record is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Accepted,
    Rejected,
}

/// Offsets of one partition that are already stored, ascending.
#[derive(Debug, Default)]
pub struct StoredOffsets {
    offsets: Vec<(u64, bool)>,
    /// Index of the first offset not yet passed.
    cursor: usize,
}

impl StoredOffsets {
    /// `offsets`: (offset, stored as accepted).
    pub fn new(mut offsets: Vec<(u64, bool)>) -> Self {
        offsets.sort_unstable();
        offsets.dedup_by_key(|(offset, _)| *offset);
        Self { offsets, cursor: 0 }
    }

    /// How `offset` is already stored, if it is. Offsets of a partition arrive
    /// in ascending order, so the set is walked once.
    pub fn get(&mut self, offset: i64) -> Option<Stored> {
        let offset = u64::try_from(offset).ok()?;
        while self
            .offsets
            .get(self.cursor)
            .is_some_and(|&(stored, _)| stored < offset)
        {
            self.cursor += 1;
        }
        match self.offsets.get(self.cursor) {
            Some(&(stored, true)) if stored == offset => Some(Stored::Accepted),
            Some(&(stored, false)) if stored == offset => Some(Stored::Rejected),
            _ => None,
        }
    }

    /// Nothing left to skip: the guard can be forgotten.
    pub fn is_exhausted(&self) -> bool {
        self.cursor >= self.offsets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_exactly_the_stored_offsets_even_with_gaps() {
        let mut stored = StoredOffsets::new(vec![(12, true), (10, false), (14, true), (12, true)]);
        let skipped: Vec<(i64, Stored)> = (10..16)
            .filter_map(|o| stored.get(o).map(|how| (o, how)))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (10, Stored::Rejected),
                (12, Stored::Accepted),
                (14, Stored::Accepted)
            ]
        );
        assert!(stored.is_exhausted());
    }

    #[test]
    fn nothing_stored_skips_nothing() {
        let mut stored = StoredOffsets::new(Vec::new());
        assert_eq!(stored.get(0), None);
        assert!(stored.is_exhausted());
    }
}
