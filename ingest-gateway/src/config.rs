//! Command-line flags, each with a `POWEHI_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Largest event the gateway lets through: Kafka refuses records over its
/// `message.max.bytes` (1 MB by default), and the envelope adds a little.
const MAX_EVENT_BYTES_CEILING: usize = 900 * 1024;

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

    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "POWEHI_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic the gateway writes one record per event to.
    #[arg(long, env = "POWEHI_RAW_TOPIC", default_value = proto::topics::RAW_EVENTS)]
    pub raw_topic: String,

    /// Partitions of the raw topic when the gateway has to create it.
    #[arg(long, env = "POWEHI_RAW_TOPIC_PARTITIONS", default_value_t = 12)]
    pub raw_topic_partitions: i32,

    /// JSON file of data sources and event schemas loaded at start (config as code).
    #[arg(long, env = "POWEHI_BOOTSTRAP")]
    pub bootstrap: Option<PathBuf>,

    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "POWEHI_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest single event accepted, serialized, in bytes (refused alone above).
    #[arg(long, env = "POWEHI_MAX_EVENT_BYTES", default_value_t = 32 * 1024)]
    pub max_event_bytes: usize,

    /// How long Kafka may take to acknowledge a request's events before the
    /// request is answered 503 (librdkafka's message.timeout.ms).
    #[arg(long, env = "POWEHI_KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 10_000)]
    pub kafka_delivery_timeout_ms: u64,

    /// How long the producer waits to fill a batch (librdkafka's linger.ms).
    #[arg(long, env = "POWEHI_KAFKA_LINGER_MS", default_value_t = 2)]
    pub kafka_linger_ms: u64,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "POWEHI_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Log filter, e.g. `info` or `ingest_gateway=debug,info`.
    #[arg(long, env = "POWEHI_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// Checks what clap cannot: limits that fit together and a usable prefix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_event_bytes > MAX_EVENT_BYTES_CEILING {
            return Err(format!(
                "POWEHI_MAX_EVENT_BYTES={} is above {MAX_EVENT_BYTES_CEILING}: Kafka would refuse such records",
                self.max_event_bytes
            ));
        }
        if self.max_event_bytes == 0 || self.max_body_bytes == 0 {
            return Err("POWEHI_MAX_BODY_BYTES and POWEHI_MAX_EVENT_BYTES must be positive".into());
        }
        let prefix = self.path_prefix.trim_end_matches('/');
        if !prefix.is_empty() && !prefix.starts_with('/') {
            return Err(format!("POWEHI_PATH_PREFIX={:?} must start with /", self.path_prefix));
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

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_delivery_timeout_ms)
    }
}
