//! `clickhouse`: the ClickHouse ceiling. RowBinary inserts (LZ4, over HTTP, with
//! the same client crate and settings as the worker) of the rows the worker
//! would write for the generated events, into a scratch database laid out by
//! the worker's own migrations, in large batches.
//!
//! Also the small ClickHouse helpers `freshness` and `bench/run.sh` need.

use std::time::{Duration, Instant};

use clap::Args;
use clickhouse::{Client, Row};
use event_worker::rows::{decode, Decoded, EventRow, Position};
use event_worker::store::Store;
use proto::config::{schema_key, ConfigRecord, ConfigSnapshot, EventSchemaRecord};
use serde::Deserialize;
use serde_json::json;

use crate::events::{kafka_record, schemas, EventGen};
use crate::stats::{emit, per_second, round3};

/// Bound on each migration statement of the scratch database.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Where ClickHouse is (shared by `clickhouse` and `freshness`). Explicit ids:
/// `freshness` has a `url` of its own (the ingest URL).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[arg(
        id = "clickhouse_url",
        long = "clickhouse-url",
        env = "POWEHI_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub url: String,
    #[arg(
        id = "clickhouse_user",
        long = "clickhouse-user",
        env = "POWEHI_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    #[arg(
        id = "clickhouse_password",
        long = "clickhouse-password",
        env = "POWEHI_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
}

impl ServerArgs {
    /// A client (validation off: ClickHouse 18.16 lacks the formats it needs).
    pub fn client(&self) -> Client {
        Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_validation(false)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Scratch database (created with the events tables; dropped with --drop).
    #[arg(long)]
    pub database: String,
    /// Rows to insert in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Rows per INSERT (the worker's default batch).
    #[arg(long, default_value_t = 50_000)]
    pub batch: usize,
    /// Data source the events belong to.
    #[arg(long, default_value = "bench")]
    pub client_id: String,
    /// Drop the database afterwards.
    #[arg(long)]
    pub drop: bool,
    /// Distinct rows generated in advance.
    #[arg(long, default_value_t = 10_000)]
    pub pool: usize,
    #[arg(long, default_value_t = 10_000)]
    pub sessions: u64,
    #[arg(long, default_value_t = 3)]
    pub seed: u64,
}

/// The row the worker writes for an event (JSON text) received at
/// `received_at_ms`: the gateway's envelope decoded by the worker's own code,
/// against the benchmark's schemas.
pub fn event_row(scope: &str, event: &str, received_at_ms: u64) -> anyhow::Result<EventRow> {
    let (_, payload) = kafka_record(scope, event, received_at_ms as i64)?;
    let position = Position {
        partition: 0,
        offset: 0,
    };
    match decode(&payload, position, received_at_ms as i64, &schema_config()) {
        Decoded::Accepted(row) => Ok(row),
        other => anyhow::bail!("generated event not accepted: {other:?}"),
    }
}

/// The config log as the worker would see it with the benchmark's schemas.
fn schema_config() -> ConfigSnapshot {
    let mut config = ConfigSnapshot::default();
    for schema in schemas() {
        let key = schema_key(&schema.event_type, 1);
        let record = ConfigRecord::EventSchema(EventSchemaRecord { version: 1, schema });
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let _ = config.apply(&key, Some(&bytes));
    }
    config
}

pub async fn run(args: ClickHouseArgs) -> anyhow::Result<()> {
    let admin = args.server.client();
    // The worker's own migrations: the layout the rows are written into.
    Store::with_client(admin.clone(), &args.database, MIGRATION_TIMEOUT)
        .migrate()
        .await?;
    let db = admin.clone().with_database(&args.database);

    let mut gen = EventGen::new(&args.client_id, args.sessions, args.seed);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let pool: Vec<EventRow> = (0..args.pool.max(1))
        .map(|_| {
            event_row(
                &args.client_id,
                &gen.event(now_ms, None).to_string(),
                now_ms as u64,
            )
        })
        .collect::<anyhow::Result<_>>()?;

    let started = Instant::now();
    let mut written = 0u64;
    let mut inserts = 0u64;
    while written < args.rows {
        let n = (args.rows - written).min(args.batch.max(1) as u64);
        let mut insert = db.insert::<EventRow>("events").await?;
        for i in written..written + n {
            let mut row = pool[(i % pool.len() as u64) as usize].clone();
            row.event_id = uuid::Uuid::now_v7().to_string();
            row.kafka_partition = (i % 12) as u32;
            row.kafka_offset = i;
            insert.write(&row).await?;
        }
        insert.end().await?;
        written += n;
        inserts += 1;
    }
    let elapsed = started.elapsed();
    let stored: u64 = db.query("SELECT count() FROM events").fetch_one().await?;
    if args.drop {
        admin
            .query(&format!("DROP DATABASE IF EXISTS {}", args.database))
            .execute()
            .await?;
    }
    let summary = json!({
        "mode": "clickhouse",
        "database": args.database,
        "rows": written,
        "stored": stored,
        "inserts": inserts,
        "batch": args.batch,
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "rows_per_s": per_second(written, elapsed),
    });
    let human = format!(
        "clickhouse {}: {written} rows in {inserts} inserts of up to {} in {:.2} s: {:.0} rows/s",
        args.database,
        args.batch,
        elapsed.as_secs_f64(),
        per_second(written, elapsed)
    );
    emit(&summary, &human);
    anyhow::ensure!(
        stored == written,
        "{written} rows inserted, {stored} stored"
    );
    Ok(())
}

/// An id of `event_log`, for `freshness`.
#[derive(Debug, Row, Deserialize)]
pub struct IdRow {
    pub event_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_trimmed_like_the_worker_does() {
        let event = r#"{"eventType":"purchase","sessionId":"s-1","scope":"bench",
            "timeStamp":"2021-10-15T18:49:00.250+07:00",
            "properties":{"sku":"a","qty":2,"price":9.5,"email":"u@x.y","junk":"z"},
            "target":{"itemId":"product-1","itemType":"product"}}"#;
        let row = event_row("bench", event, 1_700_000_000_123).expect("row");
        assert!(!row.properties.contains("junk"), "{}", row.properties);
        assert!(row.properties.contains("\"sku\""));
        assert_eq!(row.event_time_ms, 1_634_298_540_250);
        assert_eq!(row.event_time, 1_634_298_540);
        assert_eq!(row.received_at, 1_700_000_000);
        assert_eq!(row.profile_id, proto::anonymous_profile_id("bench", "s-1"));
        assert_eq!(row.profile_property_names, vec!["email".to_string()]);
        assert_eq!(
            (row.target_id.as_str(), row.source_id.as_str()),
            ("product-1", "")
        );
    }
}
