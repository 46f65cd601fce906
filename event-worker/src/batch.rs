//! Rows waiting to be written. Which Kafka offsets a batch lets the worker
//! commit is kept with the partitions (see [`crate::partitions`]).
//!
//! A batch is written when it is full (rows or bytes) or old (age of its first
//! record), whichever comes first, so memory is bounded and the event log is
//! never staler than the age limit plus one insert.
//!
//! Everything here goes by where each row's record sits in Kafka
//! ([`EventRow::record`]), not by the row's identity: they differ for a replay
//! (see [`crate::replay`]), whose record must be dropped with its own
//! partition, and which is never found stored under its own position.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proto::config::ConfigSnapshot;

use crate::rows::{Decoded, EventRow, Position, RejectedRow};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

#[derive(Default)]
pub struct Batch {
    /// Accepted rows to write to `events` (then to the profile feed).
    pub events: Vec<EventRow>,
    pub rejected: Vec<RejectedRow>,
    /// Accepted rows already in `events` whose profile feed is still to be
    /// written: written by this batch's first step, or found stored on
    /// takeover (see [`crate::profiles`]).
    pub to_feed: Vec<EventRow>,
    /// Record bytes behind the rows still to write.
    bytes: usize,
    /// When the first record of this batch arrived.
    opened_at: Option<Instant>,
    /// Partitions with records in this batch (rows or not).
    partitions: BTreeSet<i32>,
}

impl Batch {
    pub fn push(&mut self, decoded: Decoded, position: Position, bytes: usize) {
        match decoded {
            Decoded::Accepted(row) => self.events.push(row),
            Decoded::Rejected(row) | Decoded::Poison(row) => self.rejected.push(row),
        }
        self.bytes += bytes;
        self.touch(position.partition);
    }

    /// An accepted record found already stored on takeover: only its profile
    /// feed is written again (idempotent), in case the writer that stored it
    /// stopped before the feed.
    pub fn push_stored(&mut self, row: EventRow, position: Position) {
        self.to_feed.push(row);
        self.touch(position.partition);
    }

    /// A record of `partition` is in this batch, with a row or without (one
    /// already stored, a repeat): the batch is due by its age from now on.
    pub fn touch(&mut self, partition: i32) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.partitions.insert(partition);
    }

    pub fn rows(&self) -> usize {
        self.events.len() + self.rejected.len() + self.to_feed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn is_full(&self, limits: &Limits) -> bool {
        self.rows() >= limits.max_rows || self.bytes >= limits.max_bytes
    }

    /// When this batch must be written at the latest.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        self.opened_at.map(|opened| opened + limits.max_age)
    }

    /// Drops the rows of profiles suppressed since they were decoded (see
    /// [`crate::rows::is_suppressed`]): a batch that waited (a worker frozen
    /// before its write, ClickHouse down) writes nothing of a profile
    /// suppressed meanwhile. Their records stay in the batch's partitions, so
    /// their offsets are committed as handled. Answers how many were dropped.
    pub fn drop_suppressed(&mut self, config: &ConfigSnapshot) -> usize {
        let before = self.rows();
        let keep_event = |row: &EventRow| {
            !config.is_suppressed(&row.scope, &row.session_id, Some(&row.profile_id))
        };
        self.events.retain(keep_event);
        self.to_feed.retain(keep_event);
        self.rejected.retain(|row| {
            let profile = Some(row.profile_id.as_str()).filter(|id| !id.is_empty());
            !config.is_suppressed(&row.scope, &row.session_id, profile)
        });
        before - self.rows()
    }

    /// Forgets everything of partitions this worker no longer owns: their new
    /// owner reads them again from the last committed offset.
    pub fn drop_partitions(&mut self, revoked: &[i32]) {
        let owned = |record: Position| !revoked.contains(&record.partition);
        self.events.retain(|row| owned(row.record));
        self.rejected.retain(|row| owned(row.record));
        self.to_feed.retain(|row| owned(row.record));
        self.partitions
            .retain(|partition| !revoked.contains(partition));
        if self.partitions.is_empty() {
            *self = Self::default();
        }
    }

    /// Keeps only the rows of `partitions` (those still in flight, see
    /// [`crate::partitions::Partitions::in_flight`]).
    pub fn keep_partitions(&mut self, partitions: &BTreeSet<i32>) {
        let gone: Vec<i32> = self.partitions.difference(partitions).copied().collect();
        if !gone.is_empty() {
            self.drop_partitions(&gone);
        }
    }

    /// Per partition, the lowest offset among the rows still to write to
    /// `events` or `rejected_events`.
    pub fn lowest_offsets(&self) -> BTreeMap<i32, i64> {
        let mut lowest = BTreeMap::new();
        let records = self.events.iter().map(|r| r.record);
        let records = records.chain(self.rejected.iter().map(|r| r.record));
        for Position { partition, offset } in records {
            let entry = lowest.entry(partition).or_insert(offset);
            *entry = (*entry).min(offset);
        }
        lowest
    }

    /// Removes the rows of `partition` whose offsets are in `stored` (sorted)
    /// from what is to be written; accepted ones still get their profile feed.
    /// Returns how many.
    pub fn drop_stored(&mut self, partition: i32, stored: &[(u64, bool)]) -> usize {
        let is_stored = |record: Position| {
            record.partition == partition
                && u64::try_from(record.offset).is_ok_and(|o| {
                    stored
                        .binary_search_by_key(&o, |(offset, _)| *offset)
                        .is_ok()
                })
        };
        let (stored_events, events): (Vec<_>, Vec<_>) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|r| is_stored(r.record));
        self.events = events;
        let before = self.rejected.len();
        self.rejected.retain(|r| !is_stored(r.record));
        let dropped = stored_events.len() + before - self.rejected.len();
        self.to_feed.extend(stored_events);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::decode;

    fn record(partition: i32, offset: i64) -> (Decoded, Position) {
        let position = Position { partition, offset };
        (
            decode(b"poison", position, 0, &Default::default()),
            position,
        )
    }

    #[test]
    fn revoked_partitions_leave_no_rows() {
        let mut batch = Batch::default();
        for (p, o) in [(0, 1), (1, 1), (1, 2)] {
            let (row, position) = record(p, o);
            batch.push(row, position, 10);
        }
        batch.touch(2);
        batch.drop_partitions(&[1]);
        assert_eq!(batch.rows(), 1);
        batch.keep_partitions(&BTreeSet::from([1, 2]));
        assert_eq!(batch.rows(), 0);
        assert!(!batch.is_empty(), "partition 2 has a record without a row");
        batch.drop_partitions(&[2]);
        assert!(batch.is_empty() && batch.deadline(&LIMITS).is_none());
    }

    const LIMITS: Limits = Limits {
        max_rows: 10,
        max_bytes: 1000,
        max_age: Duration::from_secs(1),
    };

    #[test]
    fn rows_found_stored_are_dropped_and_accepted_ones_still_fed() {
        let mut batch = Batch::default();
        for (p, o) in [(0, 5), (0, 6), (0, 7), (1, 3)] {
            let (row, position) = record(p, o);
            batch.push(row, position, 10);
        }
        assert_eq!(
            batch.lowest_offsets().into_iter().collect::<Vec<_>>(),
            vec![(0, 5), (1, 3)]
        );
        assert_eq!(
            batch.drop_stored(0, &[(5, false), (7, false), (9, true)]),
            2
        );
        assert_eq!(batch.rows(), 2);
        assert_eq!(
            batch.lowest_offsets().into_iter().collect::<Vec<_>>(),
            vec![(0, 6), (1, 3)]
        );
    }

    #[test]
    fn a_replay_goes_by_its_records_position_not_its_identity() {
        // A replay (record 3/100) of the rejected record 1/7.
        let payload = br#"{"v":1,"id":"e1","scope":"demo","receivedAt":1,
            "replay":{"job":"j","partition":1,"offset":7,"rejectedAt":1,"replayedAt":2},
            "event":{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}}"#;
        let position = Position {
            partition: 3,
            offset: 100,
        };
        let mut batch = Batch::default();
        batch.push(
            decode(payload, position, 0, &Default::default()),
            position,
            10,
        );
        assert_eq!(
            batch.rejected[0].kafka_offset, 7,
            "stored as the rejected record"
        );
        assert_eq!(
            batch.lowest_offsets().into_iter().collect::<Vec<_>>(),
            vec![(3, 100)]
        );
        assert_eq!(
            batch.drop_stored(1, &[(7, false)]),
            0,
            "the rejected record being stored does not make its replay stored"
        );
        batch.drop_partitions(&[1]);
        assert_eq!(batch.rows(), 1, "kept while its own partition is owned");
        batch.drop_partitions(&[3]);
        assert_eq!(batch.rows(), 0);
    }

    #[test]
    fn full_by_rows_or_bytes() {
        let limits = Limits {
            max_rows: 2,
            max_bytes: 100,
            max_age: Duration::from_secs(1),
        };
        let mut batch = Batch::default();
        let (row, position) = record(0, 0);
        batch.push(row, position, 99);
        assert!(!batch.is_full(&limits));
        let (row, position) = record(0, 1);
        batch.push(row, position, 1);
        assert!(batch.is_full(&limits));
        assert!(batch.deadline(&limits).is_some());
    }
}
