//! `freshness`: how long after its HTTP acknowledgement an event is visible to
//! analysts. Open-loop sends at a fixed rate, one event per request, each with
//! a unique `itemId` (so its event id is known); the ack time of every 200 is
//! recorded while a poller asks ClickHouse which of them `event_log` shows.
//!
//! An event is counted visible at the *start* of the first poll that returned
//! it: it was not visible at the start of the poll before, so the figure
//! over-states freshness by at most one poll interval (`--poll-ms`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use crate::clickhouse::{IdRow, ServerArgs};
use crate::events::EventGen;
use crate::http::IngestArgs;
use crate::http_client::{parse_url, post_request, Url};
use crate::load::{self, LoadSpec, Requests};
use crate::stats::{emit, per_second, Latencies};

#[derive(Debug, Clone, Args)]
pub struct FreshnessArgs {
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// Requests (= events) per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    #[command(flatten)]
    pub clickhouse: ServerArgs,
    /// The workers' database.
    #[arg(long)]
    pub database: String,
    /// Table or view polled.
    #[arg(long, default_value = "event_log")]
    pub table: String,
    /// Poll interval.
    #[arg(long, default_value_t = 50)]
    pub poll_ms: u64,
    /// How long to wait, after the last send, for the last events to show.
    #[arg(long, default_value_t = 30.0)]
    pub wait: f64,
    #[arg(long, default_value_t = 1_000)]
    pub sessions: u64,
    #[arg(long, default_value_t = 4)]
    pub seed: u64,
}

/// How far before the oldest event not yet seen a poll starts looking (its
/// send time on this machine's clock against the gateway's receive time).
const POLL_MARGIN_MS: i64 = 2_000;

/// Generates each request on demand (its `itemId` is its index) and keeps the
/// ack time of every accepted one.
struct Tracked {
    url: Url,
    headers: Vec<(String, String)>,
    prefix: String,
    gen: Mutex<EventGen>,
    acks: Mutex<HashMap<u64, Instant>>,
    /// Events sent and not seen yet (not refused either), with their send time
    /// in epoch ms: a poll only asks for events received since the oldest one,
    /// so its answer stays small however long the run (asking for every event
    /// of the run made each poll return hundreds of thousands of ids, and the
    /// load generator fell behind its own schedule parsing them).
    unseen: Mutex<BTreeMap<u64, i64>>,
}

impl Tracked {
    /// The `received_at_ms` a poll starts from.
    fn poll_since_ms(&self) -> u64 {
        let oldest = lock(&self.unseen).values().next().copied();
        let from = oldest.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        (from - POLL_MARGIN_MS).max(0) as u64
    }
}

impl Requests for Tracked {
    fn request(&self, index: u64) -> Arc<[u8]> {
        let id = format!("{}{index}", self.prefix);
        let now_ms = chrono::Utc::now().timestamp_millis();
        lock(&self.unseen).insert(index, now_ms);
        let event = lock(&self.gen).event(now_ms, Some(&id));
        let body = json!({ "events": [event] }).to_string();
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        post_request(&self.url, &headers, body.as_bytes()).into()
    }

    fn answered(&self, index: u64, status: u16, at: Instant) {
        if status == 200 {
            lock(&self.acks).insert(index, at);
        } else {
            lock(&self.unseen).remove(&index);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The index of a tracked event id, if it is one of this run's.
fn index_of(prefix: &str, id: &str) -> Option<u64> {
    id.strip_prefix(prefix)?.parse().ok()
}

pub async fn run(args: FreshnessArgs) -> anyhow::Result<()> {
    let url = parse_url(&args.ingest.url)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("fresh-{}-", &run_id[..12]);
    let tracked = Arc::new(Tracked {
        url: url.clone(),
        headers: args
            .ingest
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .to_vec(),
        prefix: prefix.clone(),
        gen: Mutex::new(EventGen::new(
            &args.ingest.client_id,
            args.sessions,
            args.seed,
        )),
        acks: Mutex::new(HashMap::new()),
        unseen: Mutex::new(BTreeMap::new()),
    });

    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let sending_done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, done, tracked) = (seen.clone(), sending_done.clone(), tracked.clone());
        // The poller shares the machine with what it measures, so its queries
        // are kept cheap: the WHERE is pushed into the view's UNION ALL (off by
        // default in ClickHouse 18.16), and `received_at`, the partition key,
        // lets ClickHouse skip the parts written before the window.
        let db = args
            .clickhouse
            .client()
            .with_setting("enable_optimize_predicate_expression", "1");
        let sql = format!(
            "SELECT event_id FROM {}.{} WHERE scope = ? AND received_at >= toDateTime(?) \
             AND received_at_ms >= ? AND event_id LIKE ?",
            args.database, args.table
        );
        let (scope, pattern) = (args.ingest.client_id.clone(), format!("{prefix}%"));
        let (interval, wait) = (
            Duration::from_millis(args.poll_ms),
            Duration::from_secs_f64(args.wait),
        );
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let mut give_up: Option<Instant> = None;
            let mut errors = 0u64;
            loop {
                let polled_at = Instant::now();
                let since_ms = tracked.poll_since_ms();
                match db
                    .query(&sql)
                    .bind(&scope)
                    .bind(since_ms / 1000)
                    .bind(since_ms)
                    .bind(&pattern)
                    .fetch_all::<IdRow>()
                    .await
                {
                    Ok(rows) => {
                        let (mut seen, mut unseen) = (lock(&seen), lock(&tracked.unseen));
                        for row in rows {
                            if let Some(i) = index_of(&prefix, &row.event_id) {
                                seen.entry(i).or_insert(polled_at);
                                unseen.remove(&i);
                            }
                        }
                    }
                    Err(_) => errors += 1,
                }
                if done.load(Ordering::Acquire) {
                    let deadline = *give_up.get_or_insert(Instant::now() + wait);
                    let acks = lock(&tracked.acks).len();
                    if lock(&seen).len() >= acks || Instant::now() >= deadline {
                        return errors;
                    }
                }
                tokio::time::sleep_until(polled_at + interval).await;
            }
        })
    };

    let spec = LoadSpec {
        authority: url.authority.clone(),
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::ZERO,
        rate: Some(args.rate),
        max_requests: None,
    };
    let mut sent = load::run(&spec, tracked.clone()).await?;
    sending_done.store(true, Ordering::Release);
    let poll_errors = poller.await.unwrap_or(0);

    let acks = lock(&tracked.acks).clone();
    let seen = lock(&seen).clone();
    let mut freshness = Latencies::default();
    let mut missing = 0u64;
    for (index, acked_at) in &acks {
        match seen.get(index) {
            Some(visible_at) => freshness.record(visible_at.saturating_duration_since(*acked_at)),
            None => missing += 1,
        }
    }
    let fresh = freshness.percentiles();
    let ack = sent.latency.percentiles();
    let summary = json!({
        "mode": "freshness",
        "rate": args.rate,
        "requests": sent.requests,
        "requests_per_s": per_second(sent.ok, sent.elapsed),
        "status": sent.statuses,
        "acked": acks.len(),
        "visible": freshness.len(),
        "missing": missing,
        "poll_ms": args.poll_ms,
        "poll_errors": poll_errors,
        "freshness_ms": fresh.to_json(),
        "ack_latency_ms": ack.to_json(),
    });
    let human = format!(
        "freshness at {} req/s: {} acked, {} visible, {missing} missing; ack->visible {}; ack latency {}",
        args.rate,
        acks.len(),
        freshness.len(),
        fresh.human(),
        ack.human()
    );
    emit(&summary, &human);
    anyhow::ensure!(
        missing == 0,
        "{missing} acknowledged events never became visible"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked() -> Tracked {
        Tracked {
            url: parse_url("http://127.0.0.1:1/powehi/smile").expect("test url"),
            headers: Vec::new(),
            prefix: "fresh-abc-".into(),
            gen: Mutex::new(EventGen::new("c", 10, 1)),
            acks: Mutex::new(HashMap::new()),
            unseen: Mutex::new(BTreeMap::new()),
        }
    }

    #[test]
    fn polls_start_before_the_oldest_event_not_seen_yet() {
        let t = tracked();
        for (index, sent_ms) in [(0, 10_000), (1, 11_000), (2, 12_000)] {
            lock(&t.unseen).insert(index, sent_ms);
        }
        assert_eq!(t.poll_since_ms(), 8_000);
        // Seen, or refused (no 200): no longer holds the polls back.
        lock(&t.unseen).remove(&0);
        t.answered(1, 503, Instant::now());
        assert_eq!(t.poll_since_ms(), 10_000);
        assert!(lock(&t.acks).is_empty());
        t.answered(2, 200, Instant::now());
        assert_eq!(t.poll_since_ms(), 10_000, "acknowledged but not seen yet");
    }

    #[test]
    fn only_this_runs_ids_are_tracked() {
        assert_eq!(index_of("fresh-abc-", "fresh-abc-42"), Some(42));
        assert_eq!(index_of("fresh-abc-", "fresh-abd-42"), None);
        assert_eq!(index_of("fresh-abc-", "fresh-abc-x"), None);
    }
}
