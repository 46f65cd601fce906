//! `/healthz`, `/readyz` and `/metrics` of the worker, on their own thread so a
//! busy pipeline never delays a probe.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::metrics::Metrics;

/// What the probes report.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Migrations applied and the consumer subscribed.
    pub started: AtomicBool,
    /// False while ClickHouse cannot be written (consumption paused).
    pub sink_ok: Arc<AtomicBool>,
}

/// Starts the server on a thread of its own and returns its handle.
pub fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<ServerHandle> {
    let data = web::Data::from(health);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/healthz",
                web::get()
                    .to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
            )
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?
    .run();
    let handle = server.handle();
    std::thread::Builder::new()
        .name("worker-http".into())
        .spawn(move || actix_web::rt::System::new().block_on(server))?;
    Ok(handle)
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let started = health.started.load(Ordering::Relaxed);
    let sink_ok = health.sink_ok.load(Ordering::Relaxed);
    if started && sink_ok {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        let reason = if started {
            "clickhouse cannot be written: consumption paused"
        } else {
            "starting"
        };
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "not_ready", "reason": reason }))
    }
}

async fn metrics_text(health: web::Data<Health>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(health.metrics.render())
}
