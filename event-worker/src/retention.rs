//! Retention (`POWEHI_RETENTION_DAYS`, off by default): whole months of
//! stored events are dropped once every row in them is older than the
//! retention, by arrival time.
//!
//! The event tables are partitioned by the month of `received_at`
//! (`deploy/clickhouse/migrations/0001_events.sql`), so a month leaves as one
//! `ALTER TABLE … DROP PARTITION`: no mutation rewriting parts, nothing
//! ClickHouse 18.16 lacks (it has no TTL). A month goes once its last day is
//! more than the retention ago, so events are kept at least the retention
//! and at most a month longer. Every worker runs the check on its schedule;
//! dropping is idempotent, so several at once do no harm.
//!
//! Profiles are aggregates (properties, first and last seen, counts), not
//! events: they keep what the dropped events contributed until
//! `event-worker rebuild-profiles --truncate` rebuilds them from the events
//! that remain (README, "Retention").

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// The tables partitioned by arrival month.
pub const TABLES: &[&str] = &["events", "rejected_events", "stored_positions"];

/// The partitions (`YYYYMM`) among `partitions` whose every instant lies
/// more than `days` before `now`. Anything that is not a month is kept.
pub fn expired(partitions: &[String], now: DateTime<Utc>, days: u32) -> Vec<String> {
    let cutoff = now - chrono::Duration::days(i64::from(days));
    partitions
        .iter()
        .filter(|p| month_end(p).is_some_and(|end| end <= cutoff))
        .cloned()
        .collect()
}

/// Whether `partition` is spelled as a month, `YYYYMM` (six digits): the
/// only partition ids retention reads, and drops (they are spliced into the
/// statement, see [`Store::drop_partition`]).
pub fn is_month(partition: &str) -> bool {
    partition.len() == 6 && partition.bytes().all(|b| b.is_ascii_digit())
}

/// The first instant after the month `YYYYMM`.
fn month_end(partition: &str) -> Option<DateTime<Utc>> {
    if !is_month(partition) {
        return None;
    }
    let year: i32 = partition[..4].parse().ok()?;
    let month: u32 = partition[4..].parse().ok()?;
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    Some(next.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Drops the expired months of every table once; the number dropped.
pub async fn apply(store: &Store, days: u32, metrics: &Metrics) -> Result<usize, StoreError> {
    let mut dropped = 0;
    for table in TABLES {
        let partitions = store.partitions(table).await?;
        for partition in expired(&partitions, Utc::now(), days) {
            store.drop_partition(table, &partition).await?;
            tracing::info!(table, partition, days, "retention: month dropped");
            metrics.retention_dropped.with_label_values(&[table]).inc();
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Runs [`apply`] now and then every `interval` until `stopping` turns true.
pub async fn run(
    store: Store,
    days: u32,
    interval: Duration,
    metrics: std::sync::Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        if let Err(error) = apply(&store, days, &metrics).await {
            tracing::warn!(%error, "retention: cannot drop expired months now; trying again later");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_month_goes_once_its_last_day_is_older_than_the_retention() {
        let months: Vec<String> = ["202510", "202511", "202512", "202601", "nonsense", "202613"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // 30 days before 2026-01-15 is 2025-12-16: November ended before it, December not.
        assert_eq!(
            expired(&months, at("2026-01-15T00:00:00Z"), 30),
            ["202510", "202511"]
        );
        // On the first instant after the cutoff reaches December's end, December goes.
        assert_eq!(
            expired(&months, at("2026-01-31T00:00:00Z"), 30),
            ["202510", "202511", "202512"]
        );
        assert!(expired(&months, at("2026-01-15T00:00:00Z"), 400).is_empty());
    }
}
