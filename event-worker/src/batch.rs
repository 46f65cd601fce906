//! Rows waiting to be written, and the Kafka offsets they will let us commit.
//!
//! A batch is written when it is full (rows or bytes) or old (age of its first
//! record), whichever comes first, so memory is bounded and the event log is
//! never staler than the age limit plus one insert.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    /// Per partition, the offset to commit once this batch is written: the
    /// *next* offset to read, i.e. the last handled offset + 1.
    next_offsets: BTreeMap<i32, i64>,
    /// Per partition, the first offset this batch handles: everything below
    /// it was written and committed before.
    first_offsets: BTreeMap<i32, i64>,
}

impl Batch {
    pub fn push(&mut self, decoded: Decoded, position: Position, bytes: usize) {
        match decoded {
            Decoded::Accepted(row) => self.events.push(row),
            Decoded::Rejected(row) | Decoded::Poison(row) => self.rejected.push(row),
        }
        self.bytes += bytes;
        self.mark_handled(position);
    }

    /// An accepted record found already stored on takeover: only its profile
    /// feed is written again (idempotent), in case the writer that stored it
    /// stopped before the feed.
    pub fn push_stored(&mut self, row: EventRow, position: Position) {
        self.to_feed.push(row);
        self.mark_handled(position);
    }

    /// A record that needs no row (already stored) still moves its partition on.
    pub fn mark_handled(&mut self, position: Position) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.next_offsets
            .insert(position.partition, position.offset + 1);
        self.first_offsets
            .entry(position.partition)
            .or_insert(position.offset);
    }

    /// Per partition, the first offset this batch handles.
    pub fn first_offsets(&self) -> &BTreeMap<i32, i64> {
        &self.first_offsets
    }

    pub fn rows(&self) -> usize {
        self.events.len() + self.rejected.len() + self.to_feed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next_offsets.is_empty()
    }

    pub fn is_full(&self, limits: &Limits) -> bool {
        self.rows() >= limits.max_rows || self.bytes >= limits.max_bytes
    }

    /// When this batch must be written at the latest.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        self.opened_at.map(|opened| opened + limits.max_age)
    }

    /// Forgets everything of partitions this worker no longer owns: their new
    /// owner reads them again from the last committed offset.
    pub fn drop_partitions(&mut self, revoked: &[i32]) {
        let owned = |partition: u32| !revoked.contains(&(partition as i32));
        self.events.retain(|row| owned(row.kafka_partition));
        self.rejected.retain(|row| owned(row.kafka_partition));
        self.to_feed.retain(|row| owned(row.kafka_partition));
        self.next_offsets
            .retain(|partition, _| !revoked.contains(partition));
        self.first_offsets
            .retain(|partition, _| !revoked.contains(partition));
        if self.next_offsets.is_empty() {
            *self = Self::default();
        }
    }

    /// Per partition, the lowest offset among the rows still to write to
    /// `events` or `rejected_events`.
    pub fn lowest_offsets(&self) -> BTreeMap<i32, i64> {
        let mut lowest = BTreeMap::new();
        let positions = self
            .events
            .iter()
            .map(|r| (r.kafka_partition, r.kafka_offset));
        let positions = positions.chain(
            self.rejected
                .iter()
                .map(|r| (r.kafka_partition, r.kafka_offset)),
        );
        for (partition, offset) in positions {
            let entry = lowest.entry(partition as i32).or_insert(offset as i64);
            *entry = (*entry).min(offset as i64);
        }
        lowest
    }

    /// Removes the rows of `partition` whose offsets are in `stored` (sorted)
    /// from what is to be written; accepted ones still get their profile feed.
    /// Returns how many. Their offsets still get committed.
    pub fn drop_stored(&mut self, partition: i32, stored: &[(u64, bool)]) -> usize {
        let is_stored = |p: u32, o: u64| {
            p as i32 == partition
                && stored
                    .binary_search_by_key(&o, |(offset, _)| *offset)
                    .is_ok()
        };
        let (stored_events, events): (Vec<_>, Vec<_>) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|r| is_stored(r.kafka_partition, r.kafka_offset));
        self.events = events;
        let before = self.rejected.len();
        self.rejected
            .retain(|r| !is_stored(r.kafka_partition, r.kafka_offset));
        let dropped = stored_events.len() + before - self.rejected.len();
        self.to_feed.extend(stored_events);
        dropped
    }

    /// Offsets to commit, leaving the batch empty for the next records.
    pub fn finish(&mut self) -> BTreeMap<i32, i64> {
        std::mem::take(self).next_offsets
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
    fn commits_the_offset_after_the_last_record_of_each_partition() {
        let mut batch = Batch::default();
        for (p, o) in [(0, 5), (1, 9), (0, 6)] {
            let (row, position) = record(p, o);
            batch.push(row, position, 10);
        }
        batch.mark_handled(Position {
            partition: 2,
            offset: 0,
        });
        assert_eq!(batch.rows(), 3);
        let first: Vec<_> = batch.first_offsets().clone().into_iter().collect();
        assert_eq!(first, vec![(0, 5), (1, 9), (2, 0)]);
        let offsets: Vec<_> = batch.finish().into_iter().collect();
        assert_eq!(offsets, vec![(0, 7), (1, 10), (2, 1)]);
        assert!(batch.is_empty());
    }

    #[test]
    fn revoked_partitions_leave_no_rows_and_no_offsets() {
        let mut batch = Batch::default();
        for (p, o) in [(0, 1), (1, 1), (1, 2)] {
            let (row, position) = record(p, o);
            batch.push(row, position, 10);
        }
        batch.drop_partitions(&[1]);
        assert_eq!(batch.rows(), 1);
        assert_eq!(batch.finish().into_iter().collect::<Vec<_>>(), vec![(0, 2)]);
    }

    #[test]
    fn rows_found_stored_are_dropped_but_still_committed() {
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
            batch.finish().into_iter().collect::<Vec<_>>(),
            vec![(0, 8), (1, 4)]
        );
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
