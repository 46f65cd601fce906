//! Command-line flags, each with a `POWEHI_*` environment fallback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use proto::cli::{ClickHouseArgs, KafkaArgs, LogArgs};

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
    #[command(flatten)]
    pub kafka: KafkaArgs,

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

    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

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

    /// A repeat of an accepted event's itemId (same data source) received
    /// within this many seconds of the first is dropped; 0 turns it off.
    #[arg(long, env = "POWEHI_DEDUP_WINDOW_SECS", default_value_t = 600)]
    pub dedup_window_secs: u64,

    /// Most itemIds remembered per partition for that (the oldest go first).
    #[arg(long, env = "POWEHI_DEDUP_MAX_ITEMS", default_value_t = 200_000)]
    pub dedup_max_items: usize,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.clickhouse.validate()?;
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
