//! Producer retries: an event whose `itemId` was already seen is dropped.
//!
//! A producer that got no answer (or a 503) sends the same batch again; events
//! that reached Kafka the first time then arrive twice, with the same `itemId`
//! and, being of the same session, on the same partition. The worker remembers,
//! per partition, the `(scope, itemId)` of accepted events received in the last
//! `POWEHI_DEDUP_WINDOW_SECS` (by the gateway's receive time) and drops a repeat
//! instead of storing it. When a worker takes over a partition it first loads
//! the window from ClickHouse, so a retry is caught whichever worker owns the
//! partition. Stated limits: a repeat more than a window apart is stored, and at
//! most `POWEHI_DEDUP_MAX_ITEMS` keys are kept per partition (the oldest go
//! first). Events without `itemId` have gateway-made unique ids and are never
//! compared.
//!
//! Replay stays exactly-once: a dropped repeat has no row, so on replay it is
//! handled again and dropped again, its original being in the loaded window.

use std::collections::{HashMap, HashSet, VecDeque};

/// The window of one partition.
#[derive(Debug, Default)]
struct PartitionWindow {
    keys: HashSet<String>,
    /// Keys in arrival order with their receive time, for expiry.
    order: VecDeque<(u64, String)>,
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

    /// Whether `partition` has a window (loaded since it was assigned).
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Starts the window of a newly owned partition with what is stored.
    pub fn load(&mut self, partition: i32, mut stored: Vec<(String, String, u64)>) {
        stored.sort_by_key(|(_, _, received)| *received);
        let window = self.partitions.entry(partition).or_default();
        *window = PartitionWindow::default();
        for (scope, item_id, received_ms) in stored {
            let key = key(&scope, &item_id);
            if window.keys.insert(key.clone()) {
                window.order.push_back((received_ms, key));
            }
        }
        self.trim(partition, u64::MAX);
    }

    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// True when `(scope, item_id)` was seen within the window before
    /// `received_ms` (a repeat to drop); otherwise remembers it.
    pub fn is_repeat(
        &mut self,
        partition: i32,
        scope: &str,
        item_id: &str,
        received_ms: u64,
    ) -> bool {
        let key = key(scope, item_id);
        let window = self.partitions.entry(partition).or_default();
        if window.keys.contains(&key) {
            return true;
        }
        window.keys.insert(key.clone());
        window.order.push_back((received_ms, key));
        self.trim(partition, received_ms);
        false
    }

    /// Drops keys older than the window (relative to `now_ms`) and past the bound.
    fn trim(&mut self, partition: i32, now_ms: u64) {
        let (window_ms, max) = (self.window_ms, self.max_per_partition);
        let Some(window) = self.partitions.get_mut(&partition) else {
            return;
        };
        let newest = if now_ms == u64::MAX {
            window.order.back().map_or(0, |(t, _)| *t)
        } else {
            now_ms
        };
        while let Some((received, key)) = window.order.front() {
            let expired = newest.saturating_sub(*received) > window_ms;
            if !expired && window.order.len() <= max {
                break;
            }
            window.keys.remove(key);
            window.order.pop_front();
        }
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
    fn a_loaded_window_catches_retries_of_stored_events() {
        let mut recent = RecentItems::new(1_000, 10);
        recent.load(
            3,
            vec![("s".into(), "a".into(), 500), ("s".into(), "b".into(), 400)],
        );
        assert!(recent.is_loaded(3));
        assert!(recent.is_repeat(3, "s", "a", 600));
        recent.forget(3);
        assert!(!recent.is_loaded(3));
    }
}
