//! Prometheus metrics of the gateway, all named `powehi_gateway_*`.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Requests by route and status code.
    pub http_requests: IntCounterVec,
    /// Request latency by route, from first byte to answer.
    pub request_duration: HistogramVec,
    /// Events by outcome: `accepted` (acknowledged by Kafka) or `refused` (envelope check).
    pub events: IntCounterVec,
    /// Accepted events dropped because their profile is suppressed (an
    /// erasure's `suppress` mode): answered as accepted, never produced.
    pub events_suppressed: IntCounter,
    /// Erasure jobs by final state (`done`, `failed`).
    pub erasures: IntCounterVec,
    /// Kafka delivery failures (each made a request answer 503).
    pub kafka_delivery_errors: IntCounter,
    /// Time from handing a request's records to the producer until the last ack.
    pub kafka_delivery_duration: Histogram,
    /// Fatal idempotent-producer errors that made the gateway replace its producer.
    pub kafka_producer_restarts: IntCounter,
    /// 1 while the gateway can reach the broker and the raw topic exists.
    pub kafka_ready: IntGauge,
    /// Config-log records by result (`applied`, `invalid`).
    pub config_records: IntCounterVec,
    /// Admin API requests by route and status.
    pub admin_requests: IntCounterVec,
    /// Requests restamped after catching up with the config log, because an
    /// event named a type this gateway did not know yet.
    pub config_catch_ups: IntCounter,
    /// Refused events answered but not recorded in the event log (budget spent).
    pub refusals_unrecorded: IntCounter,
    /// Ingest requests in progress, and the body bytes they hold (see
    /// `admission`); set when scraped.
    pub requests_in_progress: IntGauge,
    /// Ingest body bytes by Content-Encoding, as received and as decoded.
    pub body_bytes: IntCounterVec,
    pub body_bytes_in_progress: IntGauge,
    /// Rejected events sent back to the raw topic by replay jobs.
    pub replayed_events: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let latency_buckets = exponential_buckets(0.0005, 2.0, 16)?;
        let metrics = Self {
            http_requests: IntCounterVec::new(
                Opts::new(
                    "powehi_gateway_http_requests_total",
                    "HTTP requests by route and status",
                ),
                &["route", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "powehi_gateway_request_duration_seconds",
                    "Ingest request latency",
                )
                .buckets(latency_buckets.clone()),
                &["route"],
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "powehi_gateway_events_total",
                    "Events by outcome (accepted, refused)",
                ),
                &["outcome"],
            )?,
            events_suppressed: IntCounter::new(
                "powehi_gateway_events_suppressed_total",
                "Accepted events of a suppressed profile, dropped before Kafka",
            )?,
            erasures: IntCounterVec::new(
                Opts::new(
                    "powehi_gateway_erasures_total",
                    "Erasure jobs that ended, by state (done, failed)",
                ),
                &["state"],
            )?,
            kafka_delivery_errors: IntCounter::new(
                "powehi_gateway_kafka_delivery_errors_total",
                "Requests whose events Kafka did not acknowledge",
            )?,
            kafka_delivery_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "powehi_gateway_kafka_delivery_duration_seconds",
                    "Time until Kafka acknowledged every event of a request",
                )
                .buckets(latency_buckets),
            )?,
            kafka_producer_restarts: IntCounter::new(
                "powehi_gateway_kafka_producer_restarts_total",
                "Producers replaced after a fatal error",
            )?,
            kafka_ready: IntGauge::new(
                "powehi_gateway_kafka_ready",
                "1 when the broker and the raw topic answer",
            )?,
            config_records: IntCounterVec::new(
                Opts::new(
                    "powehi_gateway_config_records_total",
                    "Config-log records by result (applied, invalid)",
                ),
                &["result"],
            )?,
            admin_requests: IntCounterVec::new(
                Opts::new(
                    "powehi_gateway_admin_requests_total",
                    "Admin API requests by route and status",
                ),
                &["route", "status"],
            )?,
            body_bytes: IntCounterVec::new(
                Opts::new(
                    "powehi_gateway_body_bytes_total",
                    "Ingest body bytes by Content-Encoding, as received and as decoded",
                ),
                &["encoding", "stage"],
            )?,
            requests_in_progress: IntGauge::new(
                "powehi_gateway_requests_in_progress",
                "Ingest requests in progress (capped by POWEHI_MAX_CONCURRENT_REQUESTS)",
            )?,
            body_bytes_in_progress: IntGauge::new(
                "powehi_gateway_body_bytes_in_progress",
                "Request-body bytes held by ingest requests in progress (capped by POWEHI_MAX_INFLIGHT_BYTES)",
            )?,
            refusals_unrecorded: IntCounter::new(
                "powehi_gateway_refusals_unrecorded_total",
                "Refused events answered but not recorded in the event log (over the per-request or per-second budget)",
            )?,
            config_catch_ups: IntCounter::new(
                "powehi_gateway_config_catch_ups_total",
                "Requests restamped after catching up with the config log for an unknown event type",
            )?,
            replayed_events: IntCounter::new(
                "powehi_gateway_replayed_events_total",
                "Rejected events sent back to the raw topic by replay jobs",
            )?,
            registry,
        };
        metrics
            .registry
            .register(Box::new(metrics.replayed_events.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.http_requests.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.request_duration.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.events.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.events_suppressed.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.erasures.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.kafka_delivery_errors.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.kafka_delivery_duration.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.kafka_producer_restarts.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.kafka_ready.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.config_records.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.admin_requests.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.config_catch_ups.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.refusals_unrecorded.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.requests_in_progress.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.body_bytes.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.body_bytes_in_progress.clone()))?;
        Ok(metrics)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
