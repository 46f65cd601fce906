//! Command-line flags, each with a `POWEHI_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use proto::cli::{ClickHouseArgs, KafkaArgs, LogArgs};

use crate::request_context::IpNet;

/// Largest event the gateway lets through: Kafka refuses records over its
/// `message.max.bytes` (1 MB by default), and the envelope adds a little.
const MAX_EVENT_BYTES_CEILING: usize = 900 * 1024;

/// Admin token when none is configured and the admin API is on loopback only.
pub const DEMO_ADMIN_TOKEN: &str = "demo-admin-token";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ingest-gateway",
    version,
    about = "Powehi ingest gateway: authenticates event batches and acknowledges them once Kafka has them"
)]
pub struct Config {
    /// Address of the public ingest API (POST /smile, health and metrics).
    #[arg(long, env = "POWEHI_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// The ingest endpoints are served at the root and under this prefix too
    /// (the reference document posts to /powehi/smile).
    #[arg(long, env = "POWEHI_PATH_PREFIX", default_value = "/powehi")]
    pub path_prefix: String,

    /// Address of the admin API (data sources, schemas, event log).
    #[arg(long, env = "POWEHI_ADMIN_ADDR", default_value = "127.0.0.1:8081")]
    pub admin_addr: SocketAddr,

    /// Serve `/metrics` on the public listener too (it is always on the
    /// admin listener): false keeps the gateway's counters off the internet.
    #[arg(long, env = "POWEHI_PUBLIC_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub public_metrics: bool,

    /// Bearer token of the admin API. Required unless the admin address is
    /// loopback, where it defaults to `demo-admin-token`.
    #[arg(long, env = "POWEHI_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Partitions of the raw topic when the gateway has to create it.
    #[arg(long, env = "POWEHI_RAW_TOPIC_PARTITIONS", default_value_t = 12)]
    pub raw_topic_partitions: i32,

    /// ClickHouse, for event-log and profile reads.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// JSON file of data sources and event schemas upserted into the config log
    /// at start (config as code).
    #[arg(long, env = "POWEHI_BOOTSTRAP")]
    pub bootstrap: Option<PathBuf>,

    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "POWEHI_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest single event accepted, serialized, in bytes (refused alone above).
    #[arg(long, env = "POWEHI_MAX_EVENT_BYTES", default_value_t = 32 * 1024)]
    pub max_event_bytes: usize,

    /// Longest a request's body may take to arrive, from the end of its
    /// headers (408 `body_timeout` after, the connection closed).
    #[arg(long, env = "POWEHI_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,

    /// Most ingest requests in progress at once (503 `overloaded` above).
    #[arg(long, env = "POWEHI_MAX_CONCURRENT_REQUESTS", default_value_t = 4_096)]
    pub max_concurrent_requests: usize,

    /// Most request-body bytes held by ingest requests in progress, together
    /// (503 `overloaded` above).
    #[arg(long, env = "POWEHI_MAX_INFLIGHT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_inflight_bytes: usize,

    /// Most events in one request (413 `too_many_events` above).
    #[arg(long, env = "POWEHI_MAX_EVENTS_PER_REQUEST", default_value_t = 1_000)]
    pub max_events_per_request: usize,

    /// Most refused events of one request recorded in the event log; the
    /// others are answered but not recorded (`unrecorded` in the answer).
    #[arg(
        long,
        env = "POWEHI_MAX_REFUSALS_RECORDED_PER_REQUEST",
        default_value_t = 100
    )]
    pub max_refusals_recorded_per_request: usize,

    /// Most refused events recorded per data source and second, on this
    /// gateway's share (see `POWEHI_RATE_LIMIT_SHARE`).
    #[arg(
        long,
        env = "POWEHI_MAX_REFUSALS_RECORDED_PER_SECOND",
        default_value_t = 1_000
    )]
    pub max_refusals_recorded_per_second: u32,

    /// Most profile reads (`POST /context`) per data source and second, on
    /// this gateway's share: each runs ClickHouse queries.
    #[arg(long, env = "POWEHI_CONTEXT_READS_PER_SECOND", default_value_t = 100)]
    pub context_reads_per_second: u32,

    /// How many gateways share each data source's rate limits: each enforces
    /// its share (the limit divided by this). Set it to the number of
    /// gateways behind the load balancer.
    #[arg(long, env = "POWEHI_RATE_LIMIT_SHARE", default_value_t = 1)]
    pub rate_limit_share: u32,

    /// How far ahead of this gateway's clock an event's time may be (its
    /// `timeStamp`, corrected by `sendAt` when sent) before the event is
    /// refused `time_in_future`: a device with a broken clock must not own
    /// a profile's latest values until the world catches up with it.
    #[arg(long, env = "POWEHI_FUTURE_TOLERANCE_SECONDS", default_value_t = 600)]
    pub future_tolerance_seconds: u32,

    /// Proxies whose `X-Forwarded-For` is believed: addresses or CIDR ranges,
    /// comma-separated (e.g. `10.0.0.0/8,127.0.0.1`). Empty: the client IP
    /// kept with events is the TCP peer's.
    #[arg(long, env = "POWEHI_TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<Option<IpNet>>,

    /// How long Kafka may take to acknowledge a request's events, queueing
    /// included, before the request is answered 503: a deadline of the
    /// gateway's own (librdkafka's message.timeout.ms too, which librdkafka
    /// may notice late while the broker is down).
    #[arg(
        long,
        env = "POWEHI_KAFKA_DELIVERY_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub kafka_delivery_timeout_ms: u64,

    /// Most events queued for Kafka and not yet acknowledged, all requests
    /// together (librdkafka's queue.buffering.max.messages; 128 MiB caps the
    /// bytes): a request that finds the queue full is answered 503 at once.
    #[arg(long, env = "POWEHI_KAFKA_QUEUE_MAX_EVENTS", default_value_t = 500_000)]
    pub kafka_queue_max_events: u32,

    /// How long the producer waits to fill a batch (librdkafka's linger.ms).
    #[arg(long, env = "POWEHI_KAFKA_LINGER_MS", default_value_t = 2)]
    pub kafka_linger_ms: u64,

    /// Compression of the raw topic's record batches (librdkafka's compression.type).
    #[arg(
        long,
        env = "POWEHI_KAFKA_COMPRESSION",
        default_value = proto::producer::DEFAULT_COMPRESSION,
        value_parser = proto::producer::COMPRESSIONS
    )]
    pub kafka_compression: String,

    /// Most rejected events one replay job may send (`POST
    /// /v1/datasources/{id}/replays`); a request matching more is refused
    /// (narrow its filters, or replay in several jobs).
    #[arg(long, env = "POWEHI_REPLAY_MAX_EVENTS", default_value_t = 100_000)]
    pub replay_max_events: u32,

    /// Rejected events a replay job reads and sends to Kafka per step; its
    /// progress is saved after each step.
    #[arg(long, env = "POWEHI_REPLAY_BATCH_EVENTS", default_value_t = 500)]
    pub replay_batch_events: u32,

    /// Pause between two steps of a replay job, to spread a large replay
    /// over time (0: none). The e2e tests use it to kill a replay half-way.
    #[arg(long, env = "POWEHI_REPLAY_PAUSE_MS", default_value_t = 0)]
    pub replay_pause_ms: u64,

    /// HTTP worker threads (default: one per core).
    /// The workers' consumer group: an erasure waits until its committed
    /// offsets pass what the raw topic held when the erasure was asked.
    #[arg(
        long,
        env = "POWEHI_CONSUMER_GROUP",
        default_value = "powehi-event-worker"
    )]
    pub consumer_group: String,

    /// How long an erasure waits, once its suppression is in the config log,
    /// for every gateway and worker to apply it before it reads the raw
    /// topic's end (see the `erasure` module).
    #[arg(long, env = "POWEHI_ERASURE_GRACE_MS", default_value_t = 5_000)]
    pub erasure_grace_ms: u64,

    /// Bound on each wait of an erasure (workers passing the raw topic's end,
    /// ClickHouse mutations); past it the job fails and may be asked again.
    #[arg(long, env = "POWEHI_ERASURE_TIMEOUT_SECS", default_value_t = 3_600)]
    pub erasure_timeout_secs: u64,

    #[arg(long, env = "POWEHI_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// One entry of `POWEHI_TRUSTED_PROXIES`; an empty one (an empty variable,
/// a trailing comma) stands for nothing.
fn trusted_proxy(text: &str) -> Result<Option<IpNet>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some)
}

impl Config {
    /// Checks what clap cannot: limits that fit together and a usable prefix.
    pub fn validate(&self) -> Result<(), String> {
        self.clickhouse.validate()?;
        if self.max_event_bytes > MAX_EVENT_BYTES_CEILING {
            return Err(format!(
                "POWEHI_MAX_EVENT_BYTES={} is above {MAX_EVENT_BYTES_CEILING}: Kafka would refuse such records",
                self.max_event_bytes
            ));
        }
        if self.max_event_bytes == 0 || self.max_body_bytes == 0 {
            return Err("POWEHI_MAX_BODY_BYTES and POWEHI_MAX_EVENT_BYTES must be positive".into());
        }
        if self.max_events_per_request == 0 || self.rate_limit_share == 0 {
            return Err(
                "POWEHI_MAX_EVENTS_PER_REQUEST and POWEHI_RATE_LIMIT_SHARE must be positive".into(),
            );
        }
        let prefix = self.path_prefix.trim_end_matches('/');
        if !prefix.is_empty() && !prefix.starts_with('/') {
            return Err(format!(
                "POWEHI_PATH_PREFIX={:?} must start with /",
                self.path_prefix
            ));
        }
        if self.admin_token.is_none() && !self.admin_addr.ip().is_loopback() {
            return Err(format!(
                "POWEHI_ADMIN_TOKEN is required when the admin API listens on {} (not loopback)",
                self.admin_addr
            ));
        }
        if self.admin_token.as_deref() == Some(DEMO_ADMIN_TOKEN)
            && !self.admin_addr.ip().is_loopback()
        {
            return Err(format!(
                "POWEHI_ADMIN_TOKEN is the public demo token while the admin API listens on {} (not loopback): set a secret one",
                self.admin_addr
            ));
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().len() < 8)
        {
            return Err("POWEHI_ADMIN_TOKEN must be at least 8 characters".into());
        }
        if self.replay_max_events == 0 || self.replay_batch_events == 0 {
            return Err(
                "POWEHI_REPLAY_MAX_EVENTS and POWEHI_REPLAY_BATCH_EVENTS must be positive".into(),
            );
        }
        if self.raw_topic_partitions < 1 {
            return Err("POWEHI_RAW_TOPIC_PARTITIONS must be at least 1".into());
        }
        Ok(())
    }

    /// The prefix without a trailing slash; empty when ingest is served only at the root.
    pub fn normalized_prefix(&self) -> &str {
        self.path_prefix.trim_end_matches('/')
    }

    /// The admin token in force: the configured one, or the demo default on loopback.
    pub fn effective_admin_token(&self) -> &str {
        self.admin_token.as_deref().unwrap_or(DEMO_ADMIN_TOKEN)
    }

    /// The configured trusted proxies, empty entries left out.
    pub fn trusted_proxy_ranges(&self) -> Vec<IpNet> {
        self.trusted_proxies.iter().flatten().copied().collect()
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_delivery_timeout_ms)
    }
}
