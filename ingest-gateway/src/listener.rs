//! The gateway's HTTP listeners, built from actix's parts rather than with
//! `HttpServer` for one reason: each connection's stream is wrapped in
//! [`JsonRefusals`], so even the requests actix's HTTP/1 parser refuses get
//! the JSON error shape (see [`crate::protocol_errors`]). The connection
//! settings are `HttpServer`'s defaults (keep-alive and head timeout 5 s,
//! disconnect 1 s, idle connections closed on a graceful stop); the app's
//! `AppConfig` (host and address for URL generation, which the gateway does
//! not use) is the default one, and the accept backlog actix-server's (2,048).

use std::net::SocketAddr;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive, Protocol, Request};
use actix_server::Server;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::rt::net::TcpStream;
use actix_web::App;
use anyhow::Context;

use crate::protocol_errors::JsonRefusals;

/// Where and how one listener serves.
pub struct Listener {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
    /// How long a graceful stop waits for requests in progress.
    pub shutdown_timeout_secs: u64,
}

/// Binds `listener` and serves the apps `app` makes (one per worker thread).
pub fn serve<F, T, B>(listener: Listener, app: F) -> anyhow::Result<Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let mut builder = Server::build()
        .disable_signals()
        .shutdown_timeout(listener.shutdown_timeout_secs);
    if let Some(workers) = listener.workers {
        builder = builder.workers(workers);
    }
    let shutdown = builder.graceful_shutdown_signal();
    let addr = listener.addr;
    let builder = builder
        .bind(listener.name, addr, move || {
            let shutdown = shutdown.clone();
            let http = HttpService::build()
                .keep_alive(KeepAlive::default())
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                // Idle keep-alive connections close at once on a graceful stop.
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .finish(map_config(
                    IntoServiceFactory::<_, Request>::into_factory(app())
                        .map_err(|error: actix_web::Error| error.error_response()),
                    |_| AppConfig::default(),
                ));
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((JsonRefusals::new(io), Protocol::Http1, peer))
            })
            .and_then(http)
        })
        .with_context(|| format!("binding {addr}"))?;
    Ok(builder.run())
}
