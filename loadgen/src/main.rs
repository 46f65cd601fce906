use clap::{Parser, Subcommand};

use loadgen::{baseline, clickhouse, events, freshness, http, kafka, slow_proxy, takeover};

/// Load generator and baselines of the Powehi benchmark (bench/run.sh).
#[derive(Debug, Parser)]
#[command(name = "powehi-loadgen")]
struct Cli {
    /// Runtime threads of the load generator (it shares the machine with what
    /// it measures).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load on the gateway: closed loop at max throughput, or open loop at --rate.
    Http(http::HttpArgs),
    /// A trivial actix-web server on the gateway's paths (the HTTP ceiling).
    BaselineHttp(baseline::BaselineArgs),
    /// Raw producer of the gateway's records (the Kafka ceiling), or --preload N.
    Kafka(kafka::KafkaArgs),
    /// Delete topics (cleanup).
    Topics(kafka::TopicsArgs),
    /// Raw RowBinary inserts of the worker's rows (the ClickHouse ceiling).
    Clickhouse(clickhouse::ClickHouseArgs),
    /// HTTP ack → visible in event_log, at a fixed rate.
    Freshness(freshness::FreshnessArgs),
    /// A TCP proxy that delays what clients send (a slow ClickHouse on demand).
    SlowProxy(slow_proxy::SlowProxyArgs),
    /// Times a worker's takeover queries against a database with many rows.
    Takeover(takeover::TakeoverArgs),
    /// Print a POWEHI_BOOTSTRAP file: data sources `id:key` and the generated types' schemas.
    Bootstrap {
        /// `id:write-key`, repeatable.
        #[arg(long = "source", required = true)]
        sources: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads.max(1))
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Http(args) => runtime()?.block_on(http::run(args)),
        Command::BaselineHttp(args) => baseline::run(args),
        Command::Kafka(args) => runtime()?.block_on(kafka::run(args)),
        Command::Topics(args) => runtime()?.block_on(kafka::delete_topics(args)),
        Command::Clickhouse(args) => runtime()?.block_on(clickhouse::run(args)),
        Command::Freshness(args) => runtime()?.block_on(freshness::run(args)),
        Command::SlowProxy(args) => runtime()?.block_on(slow_proxy::run(args)),
        Command::Takeover(args) => runtime()?.block_on(takeover::run(args)),
        Command::Bootstrap { sources } => {
            let pairs = sources
                .iter()
                .map(|s| {
                    s.split_once(':')
                        .map(|(id, key)| (id.to_string(), key.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--source {s}: expected id:key"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&events::bootstrap(&pairs))?
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `freshness` has its own `--url` (the ingest URL) beside the flattened
    /// ClickHouse flags: both must parse and land in their own fields.
    #[test]
    fn freshness_keeps_the_ingest_url_apart_from_clickhouse() {
        let args = [
            "powehi-loadgen",
            "freshness",
            "--url",
            "http://127.0.0.1:1/powehi/smile",
            "--client-id",
            "c",
            "--token",
            "t",
            "--database",
            "d",
            "--clickhouse-url",
            "http://127.0.0.1:2",
        ];
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Freshness(f),
            ..
        }) = cli
        else {
            panic!("{cli:?}")
        };
        assert_eq!(
            (f.ingest.url.as_str(), f.clickhouse.url.as_str()),
            ("http://127.0.0.1:1/powehi/smile", "http://127.0.0.1:2")
        );
    }
}
