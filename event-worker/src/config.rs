//! Command-line flags, each with a `POWEHI_*` environment fallback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// ClickHouse splits an INSERT into blocks of this many rows (max_insert_block_size);
/// a batch must fit in one block to be written as one part per table partition.
const CLICKHOUSE_BLOCK_ROWS: usize = 1_048_576;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "event-worker",
    version,
    about = "Powehi event worker: consumes raw events from Kafka and writes them to ClickHouse exactly once"
)]
pub struct Config {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "POWEHI_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic of raw events written by the gateways.
    #[arg(long, env = "POWEHI_RAW_TOPIC", default_value = proto::topics::RAW_EVENTS)]
    pub raw_topic: String,

    /// Compacted topic of data sources and event schemas (replayed at start).
    #[arg(long, env = "POWEHI_CONFIG_TOPIC", default_value = proto::topics::CONFIG)]
    pub config_topic: String,

    /// Consumer group: workers in one group share the raw topic's partitions.
    #[arg(
        long,
        env = "POWEHI_CONSUMER_GROUP",
        default_value = "powehi-event-worker"
    )]
    pub consumer_group: String,

    /// A worker that stops heartbeating for this long loses its partitions to the others.
    #[arg(
        long,
        env = "POWEHI_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub kafka_session_timeout_ms: u64,

    /// ClickHouse HTTP interface.
    #[arg(
        long,
        env = "POWEHI_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub clickhouse_url: String,

    /// Database of the event tables (created with its tables at start).
    #[arg(long, env = "POWEHI_CLICKHOUSE_DATABASE", default_value = "powehi")]
    pub clickhouse_database: String,

    #[arg(long, env = "POWEHI_CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,

    #[arg(
        long,
        env = "POWEHI_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub clickhouse_password: String,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "POWEHI_WORKER_HTTP_ADDR", default_value = "0.0.0.0:9091")]
    pub http_addr: SocketAddr,

    /// A batch is written when it holds this many rows…
    #[arg(long, env = "POWEHI_BATCH_MAX_ROWS", default_value_t = 50_000)]
    pub batch_max_rows: usize,

    /// …or this many bytes of records…
    #[arg(long, env = "POWEHI_BATCH_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub batch_max_bytes: usize,

    /// …or when its oldest record is this old (bounds how stale the event log is).
    #[arg(long, env = "POWEHI_BATCH_MAX_AGE_MS", default_value_t = 500)]
    pub batch_max_age_ms: u64,

    /// Log filter, e.g. `info` or `event_worker=debug,info`.
    #[arg(long, env = "POWEHI_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        let db = &self.clickhouse_database;
        let valid_name = db
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!(
                "POWEHI_CLICKHOUSE_DATABASE={db:?} must be letters, digits and underscores, not starting with a digit"
            ));
        }
        if self.batch_max_rows == 0 || self.batch_max_rows >= CLICKHOUSE_BLOCK_ROWS {
            return Err(format!(
                "POWEHI_BATCH_MAX_ROWS must be between 1 and {}",
                CLICKHOUSE_BLOCK_ROWS - 1
            ));
        }
        if self.batch_max_bytes == 0 {
            return Err("POWEHI_BATCH_MAX_BYTES must be positive".into());
        }
        Ok(())
    }

    pub fn batch_max_age(&self) -> Duration {
        Duration::from_millis(self.batch_max_age_ms)
    }
}
