use clap::Parser;
use ingest_gateway::Config;
use tokio::signal::unix::{signal, SignalKind};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.log.init();
    config
        .validate()
        .map_err(|problem| anyhow::anyhow!("invalid configuration: {problem}"))?;
    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    ingest_gateway::run(config, shutdown).await
}
