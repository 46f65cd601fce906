//! `takeover`: what a worker asks ClickHouse when it takes a partition over,
//! timed against a database that already holds many rows. The very calls the
//! worker makes (`event_worker::store::Store`), for each partition in turn as a
//! worker that takes all of them over would: the offsets stored past a
//! committed position near the end of the partition, and the dedup window of
//! the last `--window-secs` before it. Beside them, as the same-run baseline,
//! the question as it was asked before `stored_positions` existed: of `events`
//! and `rejected_events`, whose keys do not start with the Kafka position.

use std::time::Instant;

use clap::{Args, Parser};
use event_worker::store::Store;
use serde_json::json;

use crate::clickhouse::ServerArgs;
use crate::stats::{emit, round3};

#[derive(Debug, Clone, Args)]
pub struct TakeoverArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// A database the worker's migrations created, with rows in it.
    #[arg(long)]
    pub database: String,
    /// Kafka partitions taken over.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Records of each partition past its committed position.
    #[arg(long, default_value_t = 1_000)]
    pub uncommitted: u64,
    /// The worker's dedup window.
    #[arg(long, default_value_t = 600)]
    pub window_secs: u64,
}

pub async fn run(args: TakeoverArgs) -> anyhow::Result<()> {
    let worker = event_worker::Config::try_parse_from([
        "event-worker",
        "--clickhouse-url",
        &args.server.url,
        "--clickhouse-user",
        &args.server.user,
        "--clickhouse-password",
        &args.server.password,
        "--clickhouse-database",
        &args.database,
    ])?;
    let store = Store::new(&worker);
    let db = args.server.client().with_database(&args.database);
    let rows: u64 = db.query("SELECT count() FROM events").fetch_one().await?;
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let window_ms = args.window_secs * 1000;
    let (mut total_s, mut slowest_s, mut offsets_found, mut items_found) = (0.0f64, 0.0f64, 0, 0);
    let mut unkeyed_s = 0.0f64;
    for partition in 0..args.partitions {
        let end: u64 = db
            .query("SELECT max(kafka_offset) FROM stored_positions WHERE kafka_partition = ?")
            .bind(partition)
            .fetch_one()
            .await?;
        let committed = end.saturating_sub(args.uncommitted) as i64;
        let started = Instant::now();
        let offsets = store.stored_offsets(partition as i32, committed).await?;
        let items = store
            .recent_items(
                partition as i32,
                now_ms.saturating_sub(window_ms),
                now_ms + 3_600_000,
            )
            .await?;
        let took = started.elapsed().as_secs_f64();
        total_s += took;
        slowest_s = slowest_s.max(took);
        let started = Instant::now();
        let unkeyed: Vec<u64> = db
            .query(
                "SELECT kafka_offset FROM events WHERE kafka_partition = ? AND kafka_offset >= ? \
                 UNION ALL \
                 SELECT kafka_offset FROM rejected_events WHERE kafka_partition = ? AND kafka_offset >= ?",
            )
            .bind(partition)
            .bind(committed)
            .bind(partition)
            .bind(committed)
            .fetch_all()
            .await?;
        let _: Vec<(String, String, u64)> = db
            .query(
                "SELECT scope, item_id, received_at_ms FROM events \
                 WHERE kafka_partition = ? AND received_at_ms >= ? AND item_id != ''",
            )
            .bind(partition)
            .bind(now_ms.saturating_sub(window_ms))
            .fetch_all()
            .await?;
        unkeyed_s += started.elapsed().as_secs_f64();
        anyhow::ensure!(
            unkeyed.len() >= offsets.len(),
            "the unkeyed query found fewer offsets than stored_positions"
        );
        offsets_found += offsets.len();
        items_found += items.len();
    }
    let summary = json!({
        "mode": "takeover",
        "database": args.database,
        "rows": rows,
        "partitions": args.partitions,
        "seconds_all_partitions": round3(total_s),
        "slowest_partition_s": round3(slowest_s),
        "unkeyed_seconds_all_partitions": round3(unkeyed_s),
        "stored_offsets_found": offsets_found,
        "window_items_found": items_found,
    });
    let human = format!(
        "takeover of {} partitions over {rows} rows: {:.3} s in all, slowest partition {:.3} s \
         (unkeyed, as before: {:.3} s)",
        args.partitions, total_s, slowest_s, unkeyed_s
    );
    emit(&summary, &human);
    Ok(())
}
