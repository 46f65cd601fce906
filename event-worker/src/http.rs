//! `/healthz`, `/readyz` and `/metrics` of the worker, on their own thread so a
//! busy pipeline never delays a probe.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::metrics::Metrics;

/// What the probes report.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Migrations applied and the consumer subscribed.
    pub started: AtomicBool,
    /// Why writing waits, while it does (consumption paused).
    pub blocked: Arc<Blocked>,
}

/// What keeps the pipeline from writing now, if anything: the reason
/// `/readyz` gives.
#[derive(Default)]
pub struct Blocked(Mutex<Option<String>>);

impl Blocked {
    pub fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
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
    let blocked = health.blocked.get();
    if started && blocked.is_none() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        let reason = match blocked {
            Some(why) if started => format!("consumption paused: {why}"),
            _ => "starting".to_string(),
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
