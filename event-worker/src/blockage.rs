//! Why the pipeline cannot write now, and how long it waits before it tries
//! again: exponential backoff from [`FIRST_BACKOFF`] doubling to
//! [`MAX_BACKOFF`], reset once writing works. The reason is published on
//! `/readyz` and as `powehi_worker_blocked{reason}`; while blocked, the owned
//! partitions are paused (the pipeline does that on [`Blockage::enter`]'s
//! word, and resumes them on [`Blockage::clear`]'s).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::http::Blocked;
use crate::metrics::Metrics;
use crate::store::StoreError;

pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What keeps the pipeline from writing.
pub enum Blocker {
    ClickHouse(StoreError),
    Ownership(KafkaError),
}

impl Blocker {
    /// The `powehi_worker_blocked` label.
    fn label(&self) -> &'static str {
        match self {
            Blocker::ClickHouse(error) if error.is_refusal() => "clickhouse_refused",
            Blocker::ClickHouse(_) => "clickhouse_unavailable",
            Blocker::Ownership(_) => "ownership_unconfirmed",
        }
    }

    fn describe(&self) -> String {
        match self {
            Blocker::ClickHouse(error) if error.is_refusal() => {
                format!("clickhouse refused the batch (an exception about its rows): {error}")
            }
            Blocker::ClickHouse(error) => format!("clickhouse cannot be written: {error}"),
            Blocker::Ownership(error) => {
                format!("partition ownership not confirmed by the group coordinator: {error}")
            }
        }
    }
}

/// The pipeline's blocked state.
pub struct Blockage {
    /// The label of what writing waits for now, if anything.
    blocked_by: Option<&'static str>,
    /// The next wait while blocked.
    backoff: Duration,
    metrics: Arc<Metrics>,
    /// Shared with the health endpoint.
    published: Arc<Blocked>,
}

impl Blockage {
    pub fn new(metrics: Arc<Metrics>, published: Arc<Blocked>) -> Self {
        Self {
            blocked_by: None,
            backoff: FIRST_BACKOFF,
            metrics,
            published,
        }
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked_by.is_some()
    }

    /// Writing waits for `blocker`: publishes why, and answers how long to
    /// wait before the next attempt and whether writing was unblocked until
    /// now (the partitions must then be paused).
    pub fn enter(&mut self, blocker: &Blocker) -> (Duration, bool) {
        if matches!(blocker, Blocker::ClickHouse(_)) {
            self.metrics.clickhouse_errors.inc();
        }
        let label = blocker.label();
        let mut newly = false;
        if self.blocked_by != Some(label) {
            if let Some(previous) = self.blocked_by.replace(label) {
                self.metrics.blocked.with_label_values(&[previous]).set(0);
            } else {
                newly = true;
                self.metrics.paused.set(1);
            }
            tracing::warn!(
                reason = blocker.describe(),
                "writing paused until this clears"
            );
            self.metrics.blocked.with_label_values(&[label]).set(1);
            self.published.set(Some(blocker.describe()));
        }
        let wait = self.backoff;
        tracing::debug!(reason = blocker.describe(), backoff = ?wait, "retrying after backoff");
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        (wait, newly)
    }

    /// Writing works again: `true` when it was blocked (the partitions must
    /// then be resumed).
    pub fn clear(&mut self) -> bool {
        let Some(label) = self.blocked_by.take() else {
            return false;
        };
        self.backoff = FIRST_BACKOFF;
        self.metrics.blocked.with_label_values(&[label]).set(0);
        self.metrics.paused.set(0);
        self.published.set(None);
        tracing::info!(was = label, "writing possible again: consumption resumed");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blockage() -> (Blockage, Arc<Blocked>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let published = Arc::new(Blocked::default());
        (
            Blockage::new(metrics.clone(), published.clone()),
            published,
            metrics,
        )
    }

    fn unavailable() -> Blocker {
        Blocker::ClickHouse(StoreError::Timeout(Duration::from_secs(30)))
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_when_writing_works() {
        let (mut blockage, published, metrics) = blockage();
        let waits: Vec<_> = (0..7).map(|_| blockage.enter(&unavailable())).collect();
        assert!(waits[0].1 && waits[1..].iter().all(|(_, newly)| !newly));
        let millis: Vec<_> = waits.iter().map(|(w, _)| w.as_millis()).collect();
        assert_eq!(millis, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert!(published
            .get()
            .is_some_and(|why| why.contains("did not answer")));
        assert_eq!(metrics.paused.get(), 1);
        assert!(blockage.clear());
        assert!(!blockage.clear(), "cleared once");
        assert_eq!((published.get(), metrics.paused.get()), (None, 0));
        assert_eq!(blockage.enter(&unavailable()), (FIRST_BACKOFF, true));
    }
}
