//! Exactly-once into ClickHouse across crashes and rebalances.
//!
//! Rows carry their Kafka partition and offset. The worker commits offsets to
//! Kafka only after the rows are in ClickHouse, so after a crash (or a partition
//! moving to another worker) the records from the last committed offset on are
//! read again, and some of them may already be stored: written, but not yet
//! committed. When a partition's first record after an assignment arrives at
//! offset `o`, the worker asks ClickHouse which offsets `>= o` it already holds
//! (in `events` or `rejected_events`) and skips exactly those.
//!
//! Asking for the exact set, rather than "the highest stored offset", stays right
//! even when a crash left a gap: ClickHouse makes an INSERT atomic only per part,
//! so an insert spanning two table partitions (a month boundary) or the two
//! tables can be half done. A stored higher offset then never hides a lost lower
//! one. While a worker owns a partition nobody else writes to it, and the worker
//! never writes a partition it no longer owns (a revoke waits for the insert in
//! flight, see [`crate::writer`], and revoked rows are dropped before the next
//! one), so the set cannot change under it.

/// Offsets of one partition that are already stored, ascending.
#[derive(Debug, Default)]
pub struct StoredOffsets {
    offsets: Vec<u64>,
    /// Index of the first offset not yet passed.
    cursor: usize,
}

impl StoredOffsets {
    pub fn new(mut offsets: Vec<u64>) -> Self {
        offsets.sort_unstable();
        offsets.dedup();
        Self { offsets, cursor: 0 }
    }

    /// Whether `offset` is already stored. Offsets of a partition arrive in
    /// ascending order, so the set is walked once.
    pub fn contains(&mut self, offset: i64) -> bool {
        let Ok(offset) = u64::try_from(offset) else {
            return false;
        };
        while self
            .offsets
            .get(self.cursor)
            .is_some_and(|&stored| stored < offset)
        {
            self.cursor += 1;
        }
        self.offsets.get(self.cursor) == Some(&offset)
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
        let mut stored = StoredOffsets::new(vec![12, 10, 14, 12]);
        let skipped: Vec<i64> = (10..16).filter(|&o| stored.contains(o)).collect();
        assert_eq!(skipped, vec![10, 12, 14]);
        assert!(stored.is_exhausted());
    }

    #[test]
    fn nothing_stored_skips_nothing() {
        let mut stored = StoredOffsets::new(Vec::new());
        assert!(!stored.contains(0));
        assert!(stored.is_exhausted());
    }
}
