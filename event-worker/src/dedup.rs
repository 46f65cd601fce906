//! Producer retries: an event whose `itemId` was already seen is dropped.
//!
//! A producer that got no answer (or a 503) sends the same batch again; events
//! that reached Kafka the first time then arrive twice, with the same `itemId`
//! and, being of the same session, on the same partition (the raw topic is
//! keyed by data source and `sessionId`). The worker remembers, per partition,
//! the `(scope, itemId)` of accepted events with their receive time, and drops
//! a record whose `(scope, itemId)` was received within `POWEHI_DEDUP_WINDOW_SECS`
//! of an earlier one *by the records' own receive times* (the gateway's clock
//! when each arrived), not by the worker's clock: a replay days later decides
//! exactly as the first pass did.
//!
//! What is deduplicated, exactly: repeats with the same data source, `itemId`
//! and Kafka partition, hence always a retry that keeps its `sessionId`. The
//! same `itemId` sent in two different sessions may land on two partitions and
//! is then stored twice: it is not a retry.
//!
//! When a worker takes over a partition it first loads, from ClickHouse's
//! `stored_positions`, the itemIds received from one window before the first
//! record it replays, so a retry is caught whichever worker owns the
//! partition. At most `POWEHI_DEDUP_MAX_ITEMS` keys are kept per partition
//! (the oldest go first). Events without `itemId` have gateway-made unique ids
//! and are never compared.
//!
//! Replay stays exactly-once: a dropped repeat has no row, so on replay it is
//! handled again and dropped again, its original being in the loaded window.

use std::collections::{HashMap, VecDeque};

/// The window of one partition.
#[derive(Debug, Default)]
struct PartitionWindow {
    /// Key → the latest receive time seen for it.
    seen: HashMap<String, u64>,
    /// Keys in arrival order with their receive time, for eviction; an entry
    /// whose time no longer matches `seen` is stale and skipped.
    order: VecDeque<(u64, String)>,
    /// Latest receive time seen in this partition.
    newest: u64,
}

impl PartitionWindow {
    fn remember(&mut self, key: String, received_ms: u64) {
        let latest = self.seen.entry(key.clone()).or_insert(received_ms);
        *latest = (*latest).max(received_ms);
        self.order.push_back((received_ms, key));
        self.newest = self.newest.max(received_ms);
    }

    /// Forgets keys that can no longer match (older than a window before the
    /// newest record) and the oldest past `max` keys.
    fn trim(&mut self, window_ms: u64, max: usize) {
        while let Some((received, key)) = self.order.front() {
            let expired = received.saturating_add(window_ms) < self.newest;
            if !expired && self.seen.len() <= max {
                break;
            }
            if self.seen.get(key) == Some(received) {
                self.seen.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[derive(Debug)]
pub struct RecentItems {
    window_ms: u64,
    max_per_partition: usize,
    partitions: HashMap<i32, PartitionWindow>,
}

impl RecentItems {
    pub fn new(window_ms: u64, max_per_partition: usize) -> Self {
        Self {
            window_ms,
            max_per_partition,
            partitions: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.window_ms > 0 && self.max_per_partition > 0
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Starts the window of a newly owned partition with what is stored.
    pub fn load(&mut self, partition: i32, mut stored: Vec<(String, String, u64)>) {
        stored.sort_by_key(|(_, _, received)| *received);
        let mut window = PartitionWindow::default();
        for (scope, item_id, received_ms) in stored {
            window.remember(key(&scope, &item_id), received_ms);
        }
        window.trim(self.window_ms, self.max_per_partition);
        self.partitions.insert(partition, window);
    }

    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// True when `(scope, item_id)` was received within the window of
    /// `received_ms` before (a repeat to drop); otherwise remembers it. Never
    /// for an event without itemId, nor with the window turned off.
    pub fn is_repeat(
        &mut self,
        partition: i32,
        scope: &str,
        item_id: &str,
        received_ms: u64,
    ) -> bool {
        if !self.enabled() || item_id.is_empty() {
            return false;
        }
        let key = key(scope, item_id);
        let window = self.partitions.entry(partition).or_default();
        if let Some(&seen) = window.seen.get(&key) {
            if seen.abs_diff(received_ms) <= self.window_ms {
                return true;
            }
        }
        window.remember(key, received_ms);
        window.trim(self.window_ms, self.max_per_partition);
        false
    }
}

fn key(scope: &str, item_id: &str) -> String {
    format!("{scope}\u{1f}{item_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_caught_per_scope() {
        let mut recent = RecentItems::new(1_000, 10);
        assert!(!recent.is_repeat(0, "shop", "a", 100));
        assert!(recent.is_repeat(0, "shop", "a", 900));
        assert!(
            !recent.is_repeat(0, "blog", "a", 900),
            "another data source may reuse an itemId"
        );
        assert!(!recent.is_repeat(1, "shop", "b", 900));
    }

    #[test]
    fn keys_expire_after_the_window_and_past_the_bound() {
        let mut recent = RecentItems::new(1_000, 2);
        assert!(!recent.is_repeat(0, "s", "old", 0));
        assert!(!recent.is_repeat(0, "s", "new", 2_000));
        assert!(
            !recent.is_repeat(0, "s", "old", 2_001),
            "expired: stored again"
        );
        assert!(!recent.is_repeat(0, "s", "x", 2_002));
        assert!(
            !recent.is_repeat(0, "s", "new", 2_003),
            "over the bound the oldest went first"
        );
    }

    #[test]
    fn the_window_is_measured_between_the_records_not_by_the_clock() {
        let mut recent = RecentItems::new(1_000, 10);
        // A replay long after: only the records' own times count.
        recent.load(0, vec![("s".into(), "a".into(), 5_000)]);
        assert!(recent.is_repeat(0, "s", "a", 5_900), "900 ms apart");
        assert!(!recent.is_repeat(0, "s", "b", 5_000));
        assert!(
            !recent.is_repeat(0, "s", "b", 6_001),
            "1,001 ms apart: not a retry"
        );
        assert!(
            recent.is_repeat(0, "s", "b", 6_500),
            "within a window of the later copy"
        );
    }

    #[test]
    fn a_loaded_window_catches_retries_of_stored_events() {
        let mut recent = RecentItems::new(1_000, 10);
        recent.load(
            3,
            vec![("s".into(), "a".into(), 500), ("s".into(), "b".into(), 400)],
        );
        assert!(recent.is_repeat(3, "s", "a", 600));
        recent.forget(3);
        assert!(
            !recent.is_repeat(3, "s", "b", 450),
            "the window went with the partition"
        );
        assert!(
            !recent.is_repeat(3, "s", "", 450),
            "no itemId: never a repeat"
        );
    }
}
