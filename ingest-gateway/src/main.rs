use clap::Parser;
use ingest_gateway::Config;
use tokio::signal::unix::{signal, SignalKind};

/// mimalloc instead of glibc's malloc: records are built on the HTTP threads
/// and freed on librdkafka's, a pattern glibc's arenas handle poorly. 100-event
/// batches: +19% requests/s (five interleaved pairs, bench/PROFILING.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
