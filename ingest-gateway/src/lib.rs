//! Powehi ingest gateway.
//!
//! Layout:
//! - [`config`]: flags and `POWEHI_*` variables.
//! - [`auth`]: data sources and hashed write keys; [`ratelimit`]: per-source budget.
//! - [`ingest`]: `POST /smile` and `/context`, from request to Kafka acknowledgement.
//! - [`profiles`]: profile reads (merged ids resolved) for `/context` and the admin API.
//! - [`sink`]: the idempotent Kafka producer and the raw topic.
//! - [`configlog`]: replays and follows `powehi.config`; writes with read-your-writes.
//! - [`bootstrap`]: `POWEHI_BOOTSTRAP`, upserted into the config log at start.
//! - [`admin`]: the admin API (data sources, schemas, event log) on its own listener;
//!   [`console`]: the web console on that listener (assets, sign-in, CSRF).
//! - [`erasure`]: erasure and suppression of a profile, as jobs (the guarantee
//!   is argued there).
//! - [`replays`]: replay jobs, rejected events sent back through the raw topic.
//! - [`routes`]: both listeners' route tables; [`openapi`]: their OpenAPI
//!   documents (`ingest-gateway/openapi/`), served at `/openapi.json`.
//! - [`listener`]: how both listeners serve HTTP; [`segment`]: Segment's API;
//!   [`tracker`]: `/powehi.js`.
//! - [`errors`]: every failure and its HTTP answer ([`json_errors`] for actix's
//!   extractors, [`protocol_errors`] for its HTTP parser); [`metrics`]: Prometheus.
//!
//! Data flow: a request is checked (media type, credentials, size, shape, rate),
//! each event's envelope is checked, every event becomes one record on the raw
//! topic, and the answer goes out once Kafka has acknowledged them all.
//!
//! Start-up: the listeners bind at once, but ingest answers 503 `not_ready`
//! until the config log is replayed and the bootstrap applied
//! ([`AppState::config_not_ready`]): before that a valid key would look
//! unknown, and a 401 is final for producers.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod configlog;
pub mod console;
pub mod cors;
pub mod encoding;
pub mod erasure;
pub mod errors;
pub mod identity;
pub mod ingest;
pub mod json_errors;
pub mod listener;
pub mod log_sql;
pub mod metrics;
pub mod openapi;
pub mod profiles;
pub mod protocol_errors;
pub mod ratelimit;
pub mod replays;
pub mod request_context;
pub mod routes;
pub mod segment;
pub mod sink;
pub mod tracker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_server::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse};
use anyhow::Context;
use proto::config::Bootstrap;

pub use config::Config;

use crate::auth::{hash_key, KeyHash, Registry, SourceLimits};
use crate::configlog::ConfigLog;
use crate::metrics::Metrics;
use crate::profiles::ProfileStore;
use crate::sink::KafkaSink;

/// What every request handler shares.
pub struct AppState {
    pub config: Config,
    /// Data sources, kept in step with the config log.
    pub registry: Registry,
    pub sink: KafkaSink,
    /// Requests and body bytes in progress, capped (see [`admission`]).
    pub admission: admission::Admission,
    pub config_log: Arc<ConfigLog>,
    /// Reads of the event log (the workers' database).
    pub event_log: clickhouse::Client,
    /// Profile reads, from the same database.
    pub profiles: ProfileStore,
    /// Erasure jobs (see [`erasure`]).
    pub erasures: Arc<erasure::Erasures>,
    pub admin_token_hash: KeyHash,
    /// Signed-in console browsers (see [`console::session`]).
    pub console_sessions: console::Sessions,
    /// `POWEHI_TRUSTED_PROXIES`, parsed (see [`request_context`]).
    pub trusted_proxies: Vec<request_context::IpNet>,
    pub metrics: Arc<Metrics>,
    /// The replay jobs this process runs (their state is in ClickHouse).
    pub replays: replays::Replays,
    /// Set by the readiness probe: the broker answers and the raw topic exists.
    pub kafka_ready: AtomicBool,
    /// The bootstrap file is applied (and so visible in the registry). Set
    /// with `Release`, read with `Acquire`: whoever sees it also sees the
    /// bootstrap's records in the registry (each was applied before it was set).
    pub bootstrapped: AtomicBool,
}

impl AppState {
    /// Why ingest cannot judge credentials yet, or `None` once it can: the
    /// config log is replayed and the bootstrap applied.
    pub fn config_not_ready(&self) -> Option<&'static str> {
        if !self.config_log.is_caught_up() {
            Some("the config log is still being replayed")
        } else if !self.bootstrapped.load(Ordering::Acquire) {
            Some("the bootstrap file is not applied yet")
        } else {
            None
        }
    }
}

/// Starts the gateway and serves until `shutdown` resolves, then drains: stops
/// accepting, finishes in-flight requests (each waits for its Kafka acks) and
/// flushes the producer.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bootstrap = match &config.bootstrap {
        Some(path) => bootstrap::load(path)?,
        None => Bootstrap::default(),
    };
    if config.admin_token.is_none() {
        tracing::warn!(addr = %config.admin_addr, "POWEHI_ADMIN_TOKEN not set: the loopback admin API uses the demo token");
    }
    let metrics = Arc::new(Metrics::new()?);
    let sink = KafkaSink::new(&config, metrics.clone()).context("creating the kafka producer")?;
    let config_log = Arc::new(
        ConfigLog::new(&config.kafka.brokers, &config.kafka.config_topic)
            .context("creating the config log client")?,
    );
    // Validation off: ClickHouse 18.16 lacks RowBinaryWithNamesAndTypes.
    let event_log = clickhouse::Client::default()
        .with_url(&config.clickhouse.url)
        .with_user(&config.clickhouse.user)
        .with_password(&config.clickhouse.password)
        .with_database(&config.clickhouse.database)
        .with_validation(false);
    let erasures = Arc::new(erasure::Erasures::new(
        event_log.clone(),
        config_log.clone(),
        metrics.clone(),
        erasure::Settings {
            database: config.clickhouse.database.clone(),
            brokers: config.kafka.brokers.clone(),
            raw_topic: config.kafka.raw_topic.clone(),
            consumer_group: config.consumer_group.clone(),
            grace: Duration::from_millis(config.erasure_grace_ms),
            timeout: Duration::from_secs(config.erasure_timeout_secs),
        },
    ));
    let state = web::Data::new(AppState {
        registry: Registry::new(SourceLimits {
            rate_share: config.rate_limit_share,
            refusals_recorded_per_second: config.max_refusals_recorded_per_second,
            context_reads_per_second: config.context_reads_per_second,
        }),
        sink,
        admission: admission::Admission::new(
            config.max_concurrent_requests,
            config.max_inflight_bytes,
        ),
        config_log: config_log.clone(),
        profiles: ProfileStore::new(event_log.clone()),
        erasures: erasures.clone(),
        event_log,
        admin_token_hash: hash_key(config.effective_admin_token()),
        console_sessions: console::Sessions::default(),
        trusted_proxies: config.trusted_proxy_ranges(),
        metrics,
        replays: replays::Replays::default(),
        kafka_ready: AtomicBool::new(false),
        bootstrapped: AtomicBool::new(false),
        config: config.clone(),
    });
    actix_web::rt::spawn(watch_kafka(state.clone().into_inner()));
    let (on_change, on_record) = (state.clone(), state.clone());
    actix_web::rt::spawn(config_log.follower.clone().follow(
        move |snapshot| on_change.registry.sync(snapshot),
        move |outcome| {
            let result = if outcome.is_ok() {
                "applied"
            } else {
                "invalid"
            };
            on_record
                .metrics
                .config_records
                .with_label_values(&[result])
                .inc();
        },
    ));
    actix_web::rt::spawn(apply_bootstrap(state.clone().into_inner(), bootstrap));
    actix_web::rt::spawn(erasures.resume_abandoned());

    let public = public_server(&config, state.clone())?;
    let admin = admin_server(&config, state.clone())?;
    tracing::info!(addr = %config.http_addr, prefix = %config.path_prefix, "ingest gateway listening");
    tracing::info!(addr = %config.admin_addr, "admin api listening");

    let (public_handle, admin_handle) = (public.handle(), admin.handle());
    let serving = actix_web::rt::spawn(public);
    let admin_serving = actix_web::rt::spawn(admin);
    shutdown.await;
    tracing::info!("shutting down: draining in-flight requests");
    admin_handle.stop(true).await;
    public_handle.stop(true).await;
    let _ = serving.await;
    let _ = admin_serving.await;
    state.sink.flush(Duration::from_secs(10));
    tracing::info!("stopped");
    Ok(())
}

/// The public listener: ingest, the tracker script, health and (optionally)
/// metrics; its routes are [`routes::public`].
fn public_server(config: &Config, state: web::Data<AppState>) -> anyhow::Result<Server> {
    let options = routes::PublicOptions {
        prefix: config.normalized_prefix().to_string(),
        metrics: config.public_metrics,
        openapi: openapi::public_document(config.normalized_prefix(), config.public_metrics)?,
    };
    let table = routes::Routes::listing("", |r| routes::public(r, &options));
    let app = move || {
        // The last wrap is the outermost: CORS grants go on every answer,
        // also the ones json_errors rewrote.
        App::new()
            .wrap(from_fn(json_errors::json_errors))
            .wrap(from_fn(cors::cors))
            .app_data(state.clone())
            .configure(|config| routes::public(&mut routes::Routes::Serve(config), &options))
            .default_service(routes::unrouted(table.clone(), errors::not_found))
    };
    listener::serve(
        listener::Listener {
            name: "powehi-public",
            addr: config.http_addr,
            workers: config.http_workers,
            // Long enough for in-flight requests to get their Kafka acks.
            shutdown_timeout_secs: config.delivery_timeout().as_secs() + 5,
        },
        app,
    )
}

/// The admin listener: [`routes::admin`] and the admin API ([`admin::configure`]).
fn admin_server(config: &Config, state: web::Data<AppState>) -> anyhow::Result<Server> {
    let document = openapi::admin_document()?;
    let mut table = routes::Routes::listing("", |r| routes::admin(r, &document));
    table.extend(routes::Routes::listing("/v1", routes::admin_v1));
    let app = move || {
        App::new()
            .wrap(from_fn(json_errors::json_errors))
            .app_data(state.clone())
            .configure(|config| routes::admin(&mut routes::Routes::Serve(config), &document))
            .configure(|config| admin::configure(config, table.clone()))
            .default_service(routes::unrouted(table.clone(), admin::not_found))
    };
    listener::serve(
        listener::Listener {
            name: "powehi-admin",
            addr: config.admin_addr,
            workers: Some(1),
            shutdown_timeout_secs: 15,
        },
        app,
    )
}

/// Once the config log is replayed, writes what the bootstrap file declares
/// and the log does not say yet; retries until it is done.
async fn apply_bootstrap(state: Arc<AppState>, bootstrap: Bootstrap) {
    loop {
        if state.config_log.is_caught_up() {
            match bootstrap::upserts(&bootstrap, &state.config_log.snapshot()) {
                Err(problem) => {
                    tracing::error!(problem, "bootstrap file cannot be applied");
                    return;
                }
                Ok(writes) => {
                    let mut failed = false;
                    // Each item planned again from the snapshot its write is
                    // conditional on (another gateway may be writing too).
                    for item in bootstrap::declared(&bootstrap) {
                        let written = state
                            .config_log
                            .update(|snapshot| {
                                let write = bootstrap::upsert(item, snapshot)
                                    .map_err(anyhow::Error::msg)?;
                                Ok::<_, anyhow::Error>((write, ()))
                            })
                            .await;
                        if let Err(error) = written {
                            tracing::warn!(%error, "bootstrap write failed, retrying");
                            failed = true;
                            break;
                        }
                    }
                    if !failed {
                        tracing::info!(records = writes.len(), "bootstrap applied");
                        state.bootstrapped.store(true, Ordering::Release);
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the raw topic when needed and keeps the readiness flag current.
async fn watch_kafka(state: Arc<AppState>) {
    let mut topic_ready = false;
    loop {
        if !topic_ready {
            match state
                .sink
                .ensure_topic(state.config.raw_topic_partitions)
                .await
            {
                Ok(()) => topic_ready = true,
                Err(error) => tracing::warn!(%error, "raw topic not available yet"),
            }
        }
        let probe_state = state.clone();
        let ready = tokio::task::spawn_blocking(move || probe_state.sink.probe())
            .await
            .unwrap_or(false);
        if ready != state.kafka_ready.swap(ready, Ordering::Relaxed) {
            tracing::info!(ready, "kafka readiness changed");
        }
        state.metrics.kafka_ready.set(i64::from(ready));
        tokio::time::sleep(Duration::from_secs(if ready { 2 } else { 1 })).await;
    }
}

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let reason = if !state.kafka_ready.load(Ordering::Relaxed) {
        "kafka is unreachable or the raw topic does not exist yet"
    } else if let Some(reason) = state.config_not_ready() {
        reason
    } else {
        return HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }));
    };
    HttpResponse::ServiceUnavailable()
        .json(serde_json::json!({ "status": "not_ready", "reason": reason }))
}

pub(crate) async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    let (requests, bytes) = state.admission.load();
    state.metrics.requests_in_progress.set(requests as i64);
    state.metrics.body_bytes_in_progress.set(bytes as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
