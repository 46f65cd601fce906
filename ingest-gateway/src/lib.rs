//! Powehi ingest gateway.
//!
//! Layout:
//! - [`config`]: flags and `POWEHI_*` variables.
//! - [`auth`]: data sources and hashed write keys; [`ratelimit`]: per-source budget.
//! - [`ingest`]: `POST /smile`, from request to Kafka acknowledgement.
//! - [`sink`]: the idempotent Kafka producer and the raw topic.
//! - [`errors`]: every failure and its HTTP answer; [`metrics`]: Prometheus.
//!
//! Data flow: a request is checked (media type, credentials, size, shape, rate),
//! each event's envelope is checked, every event becomes one record on the raw
//! topic, and the answer goes out once Kafka has acknowledged them all.

pub mod auth;
pub mod config;
pub mod errors;
pub mod ingest;
pub mod metrics;
pub mod ratelimit;
pub mod sink;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use proto::config::Bootstrap;

pub use config::Config;

use crate::auth::Registry;
use crate::metrics::Metrics;
use crate::sink::KafkaSink;

/// What every request handler shares.
pub struct AppState {
    pub config: Config,
    pub registry: Registry,
    pub sink: KafkaSink,
    pub metrics: Arc<Metrics>,
    /// Set by the readiness probe: the broker answers and the raw topic exists.
    pub kafka_ready: AtomicBool,
}

/// Starts the gateway and serves until `shutdown` resolves, then drains: stops
/// accepting, finishes in-flight requests (each waits for its Kafka acks) and
/// flushes the producer.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bootstrap = load_bootstrap(&config)?;
    let registry = Registry::from_bootstrap(&bootstrap).map_err(|e| anyhow::anyhow!(e))?;
    if registry.is_empty() {
        tracing::warn!("no data source is configured: every request will be refused (set POWEHI_BOOTSTRAP)");
    }
    let metrics = Arc::new(Metrics::new()?);
    let sink = KafkaSink::new(&config, metrics.clone()).context("creating the kafka producer")?;
    let state = web::Data::new(AppState {
        registry,
        sink,
        metrics,
        kafka_ready: AtomicBool::new(false),
        config: config.clone(),
    });
    actix_web::rt::spawn(watch_kafka(state.clone().into_inner()));

    let prefix = config.normalized_prefix().to_string();
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(app_state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
            .route("/smile", web::post().to(ingest::smile));
        if !prefix.is_empty() {
            app = app.route(&format!("{prefix}/smile"), web::post().to(ingest::smile));
        }
        app.default_service(web::to(errors::not_found))
    })
    .disable_signals()
    // Below the usual 30 s of orchestrators, above the Kafka delivery timeout.
    .shutdown_timeout(config.delivery_timeout().as_secs() + 5);
    let server = match config.http_workers {
        Some(workers) => server.workers(workers),
        None => server,
    }
    .bind(config.http_addr)
    .with_context(|| format!("binding {}", config.http_addr))?
    .run();
    tracing::info!(addr = %config.http_addr, prefix = %config.path_prefix, "ingest gateway listening");

    let handle = server.handle();
    let serving = actix_web::rt::spawn(server);
    shutdown.await;
    tracing::info!("shutting down: draining in-flight requests");
    handle.stop(true).await;
    let _ = serving.await;
    state.sink.flush(Duration::from_secs(10));
    tracing::info!("stopped");
    Ok(())
}

fn load_bootstrap(config: &Config) -> anyhow::Result<Bootstrap> {
    let Some(path) = &config.bootstrap else {
        return Ok(Bootstrap::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading POWEHI_BOOTSTRAP {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing POWEHI_BOOTSTRAP {}", path.display()))
}

/// Creates the raw topic when needed and keeps the readiness flag current.
async fn watch_kafka(state: Arc<AppState>) {
    let mut topic_ready = false;
    loop {
        if !topic_ready {
            match state.sink.ensure_topic(state.config.raw_topic_partitions).await {
                Ok(()) => topic_ready = true,
                Err(error) => tracing::warn!(%error, "raw topic not available yet"),
            }
        }
        let probe_state = state.clone();
        let ready = tokio::task::spawn_blocking(move || probe_state.sink.probe()).await.unwrap_or(false);
        if ready != state.kafka_ready.swap(ready, Ordering::Relaxed) {
            tracing::info!(ready, "kafka readiness changed");
        }
        state.metrics.kafka_ready.set(i64::from(ready));
        tokio::time::sleep(Duration::from_secs(if ready { 2 } else { 1 })).await;
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.kafka_ready.load(Ordering::Relaxed) {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "not_ready",
            "reason": "kafka is unreachable or the raw topic does not exist yet"
        }))
    }
}

async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
