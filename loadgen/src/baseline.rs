//! `baseline-http`: the HTTP ceiling. A trivial actix-web server on the same
//! paths as the gateway that reads the whole body and answers `{"updated":0}`,
//! with as many workers as the gateway uses by default (one per core). What the
//! gateway reaches as a share of this is what its own work costs.

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: String,
    /// Path prefix, like the gateway's (`/powehi`); `/smile` is served too.
    #[arg(long, default_value = "/powehi")]
    pub path_prefix: String,
    /// HTTP worker threads (default: one per core, like the gateway).
    #[arg(long)]
    pub workers: Option<usize>,
}

async fn smile(body: web::Bytes) -> HttpResponse {
    // Touch the body so reading it cannot be optimized away.
    let _ = std::hint::black_box(body.len());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"updated":0}"#)
}

pub fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let prefix = args.path_prefix.trim_end_matches('/').to_string();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                // The gateway's default body limit.
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .route("/smile", web::post().to(smile))
                .route(&format!("{prefix}/smile"), web::post().to(smile))
        });
        let server = match args.workers {
            Some(n) => server.workers(n),
            None => server,
        };
        eprintln!("baseline-http listening on {}", args.addr);
        server.bind(&args.addr)?.run().await?;
        Ok(())
    })
}
