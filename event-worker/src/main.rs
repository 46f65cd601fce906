use clap::Parser;
use event_worker::Config;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.log.init();
    config
        .validate()
        .map_err(|problem| anyhow::anyhow!("invalid configuration: {problem}"))?;
    // Multi-threaded: the pipeline's synchronous offset commit uses block_in_place.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        event_worker::run(config, shutdown).await
    })
}
