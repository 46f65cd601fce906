use clap::Parser;
use ingest_gateway::Config;
use tokio::signal::unix::{signal, SignalKind};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
