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

    /// This worker's stable name in the consumer group (Kafka static membership,
    /// `group.instance.id`): a worker restarted under the same name (after a
    /// kill -9) gets its partitions back at once instead of after the session
    /// timeout. Two live workers of one group must never share a name.
    /// Default: the host name (a container's id under docker-compose `--scale`).
    #[arg(long, env = "POWEHI_WORKER_ID")]
    pub worker_id: Option<String>,

    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// Longest wait for any one ClickHouse call (an INSERT, a takeover query);
    /// past it the call counts as failed and is retried with backoff.
    #[arg(long, env = "POWEHI_CLICKHOUSE_TIMEOUT_MS", default_value_t = 30_000)]
    pub clickhouse_timeout_ms: u64,

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

    /// Keep stored events this many days (by arrival), then drop them a
    /// whole month at a time; unset keeps them forever (see `retention`).
    #[arg(long, env = "POWEHI_RETENTION_DAYS")]
    pub retention_days: Option<u32>,

    /// How often a worker looks for months past the retention.
    #[arg(long, env = "POWEHI_RETENTION_INTERVAL_SECS", default_value_t = 3_600)]
    pub retention_interval_secs: u64,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off operations instead of consuming.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Brings the ClickHouse database up to this version's layout (what a
    /// worker does at every start), then exits: run it before a rolling
    /// upgrade so no worker of the new version waits on another's migration.
    Migrate,
    /// Feeds every stored event to the profile tables again, then exits.
    /// Idempotent (the profile aggregates ignore a record they already hold):
    /// repairs profiles after a derived table was lost or damaged. With
    /// `--truncate`, empties the derived tables first (readers see profiles
    /// shrink until the rebuild is done).
    RebuildProfiles {
        #[arg(long)]
        truncate: bool,
    },
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.clickhouse.validate()?;
        if self.retention_days == Some(0) || self.retention_interval_secs == 0 {
            return Err(
                "POWEHI_RETENTION_DAYS and POWEHI_RETENTION_INTERVAL_SECS must be positive (leave \
                 POWEHI_RETENTION_DAYS unset to keep events forever)"
                    .into(),
            );
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
        if self.clickhouse_timeout_ms == 0 {
            return Err("POWEHI_CLICKHOUSE_TIMEOUT_MS must be positive".into());
        }
        if self
            .worker_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err("POWEHI_WORKER_ID must not be blank".into());
        }
        Ok(())
    }

    /// The static group member name: `POWEHI_WORKER_ID`, else the host name.
    pub fn worker_name(&self) -> String {
        if let Some(id) = &self.worker_id {
            return id.trim().to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "event-worker".to_string())
    }

    pub fn clickhouse_timeout(&self) -> Duration {
        Duration::from_millis(self.clickhouse_timeout_ms)
    }

    pub fn batch_max_age(&self) -> Duration {
        Duration::from_millis(self.batch_max_age_ms)
    }
}
