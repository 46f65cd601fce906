//! `http`: load against the gateway's `POST /powehi/smile` (or the baseline).
//!
//! Request bodies come from a pool generated before the run (so the generator's
//! CPU is not spent during it); events carry no `itemId`, so each gets a fresh
//! event id at the gateway and no two are duplicates.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::events::EventGen;
use crate::http_client::{parse_url, post_request};
use crate::load::{self, LoadSpec, Requests};
use crate::stats::{emit, per_second, round3};

/// Where the events go and whose they are (shared by `http` and `freshness`).
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Ingest URL, e.g. http://127.0.0.1:8080/powehi/smile.
    #[arg(long)]
    pub url: String,
    /// X-Client-ID (also each event's scope).
    #[arg(long)]
    pub client_id: String,
    /// X-Client-Access-Token.
    #[arg(long)]
    pub token: String,
}

impl IngestArgs {
    /// The credential headers of every request.
    pub fn headers(&self) -> [(&str, &str); 2] {
        [
            ("X-Client-ID", self.client_id.as_str()),
            ("X-Client-Access-Token", self.token.as_str()),
        ]
    }
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// Events per request (1, 10, 100, …).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Open loop at this many requests per second (latency from the scheduled
    /// send time); without it, closed loop at max throughput.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stop after this many requests, if sooner (tiny smoke runs).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Distinct request bodies generated in advance.
    #[arg(long, default_value_t = 1000)]
    pub pool: usize,
    /// Distinct sessions the events belong to.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

struct Pool(Vec<Arc<[u8]>>);

impl Requests for Pool {
    fn request(&self, index: u64) -> Arc<[u8]> {
        self.0[(index % self.0.len() as u64) as usize].clone()
    }
}

pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    let url = parse_url(&args.ingest.url)?;
    let mut gen = EventGen::new(&args.ingest.client_id, args.sessions, args.seed);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let headers = args.ingest.headers();
    let mut body_bytes = 0usize;
    let pool: Vec<Arc<[u8]>> = (0..args.pool.max(1))
        .map(|_| {
            let body = gen.body(args.batch.max(1), now_ms);
            body_bytes += body.len();
            post_request(&url, &headers, body.as_bytes()).into()
        })
        .collect();
    let mean_body = body_bytes / pool.len();
    let spec = LoadSpec {
        authority: url.authority.clone(),
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        rate: args.rate,
        max_requests: args.requests,
    };
    let mut result = load::run(&spec, Arc::new(Pool(pool))).await?;
    let events = result.ok * args.batch as u64;
    let latency = result.latency.percentiles();
    let service = result.service.percentiles();
    let summary = json!({
        "mode": "http",
        "loop": if args.rate.is_some() { "open" } else { "closed" },
        "url": args.ingest.url,
        "batch": args.batch,
        "connections": args.connections,
        "target_rate": args.rate,
        "mean_body_bytes": mean_body,
        "elapsed_s": round3(result.elapsed.as_secs_f64()),
        "requests": result.requests,
        "ok_requests": result.ok,
        "events": events,
        "requests_per_s": per_second(result.ok, result.elapsed),
        "events_per_s": per_second(events, result.elapsed),
        "status": result.statuses,
        "latency_ms": latency.to_json(),
        "service_ms": service.to_json(),
        "send_lag_ms": result.send_lag.percentiles().to_json(),
    });
    let human = format!(
        "http {} batch {} x{} conns: {:.0} req/s, {:.0} events/s, statuses {:?}; latency {}",
        if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        args.batch,
        args.connections,
        per_second(result.ok, result.elapsed),
        per_second(events, result.elapsed),
        result.statuses,
        latency.human(),
    );
    emit(&summary, &human);
    anyhow::ensure!(
        result.ok > 0,
        "no request was answered 2xx: {:?}",
        result.statuses
    );
    Ok(())
}
