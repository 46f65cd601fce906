//! Prometheus metrics of the worker, all named `powehi_worker_*`.

use crate::rows::{Decoded, Position};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub records_consumed: IntCounter,
    /// Rows written, by table (`events`, `rejected_events`).
    pub rows_inserted: IntCounterVec,
    /// Records found already stored after a crash or rebalance, not written again.
    pub records_skipped: IntCounter,
    /// Records that were not Powehi envelopes (stored as rejected).
    pub poison_records: IntCounter,
    pub insert_duration: Histogram,
    pub batch_rows: Histogram,
    /// Failed ClickHouse calls (each is retried).
    pub clickhouse_errors: IntCounter,
    /// Offset commits by result (`ok`, `error`).
    pub commits: IntCounterVec,
    pub assigned_partitions: IntGauge,
    /// 1 while consumption is paused because ClickHouse cannot be written.
    pub paused: IntGauge,
    /// Kafka consumers replaced after librdkafka declared one unusable.
    pub consumer_restarts: IntCounter,
    /// Records behind the partition's end, from librdkafka statistics.
    pub consumer_lag: IntGaugeVec,
    /// Events by outcome (`accepted`, `rejected`).
    pub events: IntCounterVec,
    /// Rejections by reason code (an event with two problems counts twice).
    pub rejections: IntCounterVec,
    /// Config-log records by result (`applied`, `invalid`).
    pub config_records: IntCounterVec,
    /// Profile changes by kind (`created`, `updated`, `merged`).
    pub profiles: IntCounterVec,
    /// Producer retries dropped (same itemId within the dedup window).
    pub duplicates: IntCounter,
    /// Rows ClickHouse refused alone, stored as `storage_refused` rejections.
    pub rows_refused: IntCounter,
    /// Stored events whose profile update the profile views refused alone.
    pub feed_refused: IntCounter,
    /// Rows their table took but one of its materialized views refused.
    pub view_refused: IntCounter,
    /// 1 for what keeps the worker from writing now (`clickhouse_unavailable`,
    /// `clickhouse_refused`, `ownership_unconfirmed`, `config_log_behind`).
    pub blocked: IntGaugeVec,
    /// Takeover queries (stored offsets, dedup window) by kind, in seconds.
    pub takeover_duration: Histogram,
    /// Months dropped by retention, by table (see [`crate::retention`]).
    pub retention_dropped: IntCounterVec,
    /// Records of a suppressed profile dropped instead of stored (an
    /// erasure's `suppress` mode, see [`crate::rows::is_suppressed`]).
    pub events_suppressed: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let metrics = Self {
            records_consumed: IntCounter::new(
                "powehi_worker_records_consumed_total",
                "Kafka records read",
            )?,
            rows_inserted: IntCounterVec::new(
                Opts::new(
                    "powehi_worker_rows_inserted_total",
                    "Rows written to ClickHouse by table",
                ),
                &["table"],
            )?,
            records_skipped: IntCounter::new(
                "powehi_worker_records_skipped_total",
                "Records already stored before a crash or rebalance, skipped on replay",
            )?,
            poison_records: IntCounter::new(
                "powehi_worker_poison_records_total",
                "Records that were not Powehi envelopes",
            )?,
            insert_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "powehi_worker_clickhouse_insert_duration_seconds",
                    "Duration of one batch insert",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
            )?,
            batch_rows: Histogram::with_opts(
                HistogramOpts::new("powehi_worker_batch_rows", "Rows per written batch")
                    .buckets(exponential_buckets(1.0, 4.0, 10)?),
            )?,
            clickhouse_errors: IntCounter::new(
                "powehi_worker_clickhouse_errors_total",
                "Failed ClickHouse calls",
            )?,
            commits: IntCounterVec::new(
                Opts::new(
                    "powehi_worker_commits_total",
                    "Kafka offset commits by result",
                ),
                &["result"],
            )?,
            assigned_partitions: IntGauge::new(
                "powehi_worker_assigned_partitions",
                "Raw-topic partitions this worker owns",
            )?,
            consumer_restarts: IntCounter::new(
                "powehi_worker_consumer_restarts_total",
                "Kafka consumers replaced after a fatal error (e.g. a static member fenced after a freeze)",
            )?,
            paused: IntGauge::new(
                "powehi_worker_paused",
                "1 while ClickHouse cannot be written",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "powehi_worker_consumer_lag",
                    "Records not yet consumed, per partition",
                ),
                &["partition"],
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "powehi_worker_events_total",
                    "Events by outcome (accepted, rejected)",
                ),
                &["outcome"],
            )?,
            rejections: IntCounterVec::new(
                Opts::new(
                    "powehi_worker_rejections_total",
                    "Rejection reasons by code",
                ),
                &["reason"],
            )?,
            config_records: IntCounterVec::new(
                Opts::new(
                    "powehi_worker_config_records_total",
                    "Config-log records by result",
                ),
                &["result"],
            )?,
            profiles: IntCounterVec::new(
                Opts::new(
                    "powehi_worker_profiles_total",
                    "Profiles created (first seen by this process), updated (properties set), merged (session identified)",
                ),
                &["kind"],
            )?,
            duplicates: IntCounter::new(
                "powehi_worker_duplicates_total",
                "Producer retries dropped: an accepted event's itemId seen within the dedup window",
            )?,
            rows_refused: IntCounter::new(
                "powehi_worker_rows_refused_total",
                "Rows ClickHouse refused alone, stored as rejected events with reason storage_refused",
            )?,
            feed_refused: IntCounter::new(
                "powehi_worker_feed_refused_total",
                "Stored events whose profile update the profile views refused alone",
            )?,
            view_refused: IntCounter::new(
                "powehi_worker_view_refused_total",
                "Rows their table took but one of its materialized views refused (stored as they are)",
            )?,
            blocked: IntGaugeVec::new(
                Opts::new(
                    "powehi_worker_blocked",
                    "1 while writing waits for this reason",
                ),
                &["reason"],
            )?,
            takeover_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "powehi_worker_takeover_seconds",
                    "Loading what is stored of a newly assigned partition (offsets and dedup window)",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
            )?,
            retention_dropped: IntCounterVec::new(
                Opts::new(
                    "powehi_worker_retention_partitions_dropped_total",
                    "Months of stored events dropped as older than POWEHI_RETENTION_DAYS",
                ),
                &["table"],
            )?,
            events_suppressed: IntCounter::new(
                "powehi_worker_events_suppressed_total",
                "Records of a suppressed profile dropped instead of stored",
            )?,
            registry: Registry::new(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.records_consumed.clone()),
            Box::new(metrics.rows_inserted.clone()),
            Box::new(metrics.records_skipped.clone()),
            Box::new(metrics.poison_records.clone()),
            Box::new(metrics.insert_duration.clone()),
            Box::new(metrics.batch_rows.clone()),
            Box::new(metrics.clickhouse_errors.clone()),
            Box::new(metrics.commits.clone()),
            Box::new(metrics.assigned_partitions.clone()),
            Box::new(metrics.paused.clone()),
            Box::new(metrics.consumer_restarts.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.events.clone()),
            Box::new(metrics.rejections.clone()),
            Box::new(metrics.config_records.clone()),
            Box::new(metrics.profiles.clone()),
            Box::new(metrics.duplicates.clone()),
            Box::new(metrics.rows_refused.clone()),
            Box::new(metrics.feed_refused.clone()),
            Box::new(metrics.view_refused.clone()),
            Box::new(metrics.blocked.clone()),
            Box::new(metrics.takeover_duration.clone()),
            Box::new(metrics.retention_dropped.clone()),
            Box::new(metrics.events_suppressed.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        Ok(metrics)
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Counts a decoded record by verdict, and a rejection by its reasons.
    pub fn count_decoded(&self, decoded: &Decoded, position: Position) {
        let rejected = match decoded {
            Decoded::Accepted(_) => {
                self.events.with_label_values(&["accepted"]).inc();
                return;
            }
            Decoded::Poison(row) => {
                self.poison_records.inc();
                tracing::warn!(
                    partition = position.partition,
                    offset = position.offset,
                    "record is not a powehi envelope; stored as rejected"
                );
                row
            }
            Decoded::Rejected(row) => row,
        };
        self.events.with_label_values(&["rejected"]).inc();
        let reasons: Vec<proto::Reason> =
            serde_json::from_str(&rejected.reasons).unwrap_or_default();
        for reason in reasons {
            self.rejections
                .with_label_values(&[reason.code.as_str()])
                .inc();
        }
    }
}
