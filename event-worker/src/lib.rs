//! Powehi event worker.
//!
//! Layout:
//! - [`config`]: flags and `POWEHI_*` variables.
//! - [`kafka`]: the consumer and its rebalance/statistics callbacks.
//! - [`pipeline`]: consume → decode → batch → insert → commit, in order.
//! - [`partitions`]: each owned partition's state (assigned → loading → live).
//! - [`rows`]: a record becomes an `events` or `rejected_events` row.
//! - [`batch`]: rows and offsets waiting for the next insert.
//! - [`replay`]: why a record is never written twice, and a replayed
//!   rejected event stored once.
//! - [`retention`]: months older than `POWEHI_RETENTION_DAYS` dropped.
//! - [`dedup`]: producer retries (same itemId) dropped within a window.
//! - [`profiles`]: why profiles stay right with many workers and under replay.
//! - [`migrations`]: the ClickHouse layout, brought up to date at start.
//! - [`store`]: ClickHouse inserts and stored offsets.
//! - [`writer`]: the insert in flight while the next batch fills.
//! - [`http`], [`metrics`]: probes and Prometheus.

pub mod batch;
pub mod blockage;
pub mod config;
pub mod dedup;
pub mod group;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod migrations;
pub mod partitions;
pub mod pipeline;
pub mod profiles;
pub mod replay;
pub mod retention;
pub mod rows;
pub mod store;
pub mod writer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::follower::ConfigFollower;
use rdkafka::consumer::Consumer;
use tokio::sync::watch;

pub use config::Config;

use crate::batch::Limits;
use crate::dedup::RecentItems;
use crate::http::{Blocked, Health};
use crate::metrics::Metrics;
use crate::pipeline::{Ended, Pipeline};
use crate::store::Store;
use crate::writer::InsertGate;

/// Runs the worker until `shutdown` resolves, then writes the last batch,
/// commits and leaves the consumer group.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let store = Store::new(&config);
    match config.command {
        Some(config::Command::RebuildProfiles { truncate }) => {
            return rebuild_profiles(&store, truncate).await;
        }
        Some(config::Command::Migrate) => {
            store
                .migrate()
                .await
                .context("applying clickhouse migrations")?;
            tracing::info!(database = %config.clickhouse.database, "clickhouse migrations applied");
            return Ok(());
        }
        None => {}
    }
    let metrics = Arc::new(Metrics::new()?);
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        started: AtomicBool::new(false),
        blocked: Arc::new(Blocked::default()),
    });
    let server = http::serve(config.http_addr, health.clone())
        .with_context(|| format!("binding {}", config.http_addr))?;
    tracing::info!(addr = %config.http_addr, "worker probes listening");

    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    let migrated = async {
        loop {
            match store.migrate().await {
                Ok(()) => return Ok(()),
                Err(error @ store::StoreError::Layout(_)) => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "cannot apply clickhouse migrations yet, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::select! {
        migrated = migrated => match migrated {
            Ok(()) => tracing::info!(database = %config.clickhouse.database, "clickhouse migrations applied"),
            Err(error) => {
                server.stop(true).await;
                return Err(error.into());
            }
        },
        _ = &mut shutdown => {
            server.stop(true).await;
            return Ok(());
        }
    }

    let follower = Arc::new(ConfigFollower::new(
        &config.kafka.brokers,
        &config.kafka.config_topic,
    ));
    let config_metrics = metrics.clone();
    tokio::spawn(follower.clone().follow(
        |_| {},
        move |outcome| {
            let result = if outcome.is_ok() {
                "applied"
            } else {
                "invalid"
            };
            config_metrics
                .config_records
                .with_label_values(&[result])
                .inc();
        },
    ));
    // Consuming before the schemas are known would reject valid events.
    tokio::select! {
        _ = wait_until(|| follower.is_caught_up()) => tracing::info!("config log replayed"),
        _ = &mut shutdown => {
            server.stop(true).await;
            return Ok(());
        }
    }

    if let Some(days) = config.retention_days {
        tracing::info!(days, "retention on: months older than that are dropped");
        tokio::spawn(retention::run(
            store.clone(),
            days,
            Duration::from_secs(config.retention_interval_secs),
            metrics.clone(),
            stopping.clone(),
        ));
    }
    let insert_gate = Arc::new(InsertGate::new(store.timeout()));
    let pipelines = Pipelines {
        config: config.clone(),
        metrics,
        insert_gate,
        store,
        follower,
        blocked: health.blocked.clone(),
        stopping,
    };
    let started = pipelines.start()?;
    health.started.store(true, Ordering::Relaxed);
    let mut running = tokio::spawn(pipelines.run(started));
    tokio::select! {
        _ = shutdown => tracing::info!("shutdown requested"),
        // The pipeline only ends on request; if it panicked the process exits
        // (uncommitted records are read again after the restart).
        ended = &mut running => {
            server.stop(true).await;
            return match ended {
                Ok(()) => Err(anyhow::anyhow!("the pipeline stopped on its own")),
                Err(error) => Err(anyhow::anyhow!("the pipeline failed: {error}")),
            };
        }
    }
    let _ = stop.send(true);
    if let Err(error) = running.await {
        tracing::error!(%error, "pipeline task failed");
    }
    server.stop(true).await;
    Ok(())
}

/// What a pipeline is made of, to make a new one when a consumer is lost.
struct Pipelines {
    config: Config,
    metrics: Arc<Metrics>,
    insert_gate: Arc<InsertGate>,
    store: Store,
    follower: Arc<proto::follower::ConfigFollower>,
    blocked: Arc<Blocked>,
    stopping: watch::Receiver<bool>,
}

impl Pipelines {
    /// A subscribed consumer and its pipeline.
    fn start(&self) -> anyhow::Result<Pipeline> {
        let config = &self.config;
        let (consumer, rebalances) =
            kafka::consumer(config, self.metrics.clone(), self.insert_gate.clone())
                .context("creating the kafka consumer")?;
        consumer
            .subscribe(&[&config.kafka.raw_topic])
            .context("subscribing to the raw topic")?;
        tracing::info!(topic = %config.kafka.raw_topic, group = %config.consumer_group, "consuming");
        let limits = Limits {
            max_rows: config.batch_max_rows,
            max_bytes: config.batch_max_bytes,
            max_age: config.batch_max_age(),
        };
        Ok(Pipeline::new(
            consumer,
            rebalances,
            self.insert_gate.clone(),
            self.store.clone(),
            config.kafka.raw_topic.clone(),
            limits,
            self.metrics.clone(),
            self.follower.clone(),
            RecentItems::new(config.dedup_window_secs * 1000, config.dedup_max_items),
            self.blocked.clone(),
            self.stopping.clone(),
        ))
    }

    /// Runs `first`, then a new pipeline each time one loses its consumer,
    /// until shutdown.
    async fn run(self, first: Pipeline) {
        let mut pipeline = first;
        loop {
            match pipeline.run().await {
                Ended::ShutDown => return,
                Ended::ConsumerLost(why) => {
                    tracing::warn!(why, "the kafka consumer is unusable: starting a new one");
                    self.metrics.consumer_restarts.inc();
                }
            }
            loop {
                match self.start() {
                    Ok(next) => break pipeline = next,
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "cannot start a new consumer; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// `rebuild-profiles`: migrations (so the tables exist), then the feed.
async fn rebuild_profiles(store: &Store, truncate: bool) -> anyhow::Result<()> {
    store
        .migrate()
        .await
        .context("applying clickhouse migrations")?;
    let started = std::time::Instant::now();
    store
        .rebuild_profiles(truncate)
        .await
        .context("feeding the stored events to the profile tables")?;
    tracing::info!(elapsed = ?started.elapsed(), truncate, "profiles rebuilt from events");
    Ok(())
}

async fn wait_until(condition: impl Fn() -> bool) {
    while !condition() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
