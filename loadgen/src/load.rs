//! The request loop shared by `http` and `freshness`: N keep-alive connections,
//! closed loop (each sends its next request as soon as the previous answer
//! arrived) or open loop at a fixed rate (see [`crate::schedule`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::http_client::Conn;
use crate::pacer::Pacer;
use crate::schedule::{due_offset, latency, slots_before};
use crate::stats::{merge_counts, Latencies, StatusCounts};

/// A request that gets no answer within this long counts as `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What to send, and what to do with the answers.
pub trait Requests: Send + Sync + 'static {
    /// The `index`-th request, complete (head and body).
    fn request(&self, index: u64) -> Arc<[u8]>;
    /// Called for every answer (`status` 0: no answer).
    fn answered(&self, _index: u64, _status: u16, _at: Instant) {}
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `host:port` to connect to.
    pub authority: String,
    pub connections: usize,
    pub duration: Duration,
    /// Requests due (open loop) or sent (closed loop) before this are not counted.
    pub warmup: Duration,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Stop after this many requests (warm-up included), if sooner.
    pub max_requests: Option<u64>,
}

/// Counts and latencies of the measured part of a run.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub requests: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    pub statuses: StatusCounts,
    /// From the due time (open loop) or the send time (closed loop).
    pub latency: Latencies,
    /// From the actual send time.
    pub service: Latencies,
    /// How late requests went out after their due time (open loop): the
    /// generator's own lag (timer resolution, busy connections), included in
    /// `latency`; 0 in closed loop.
    pub send_lag: Latencies,
    /// From the start of measurement to the last counted answer.
    pub elapsed: Duration,
}

pub async fn run<R: Requests>(spec: &LoadSpec, requests: Arc<R>) -> std::io::Result<LoadResult> {
    let next = Arc::new(AtomicU64::new(0));
    // A short head start so every connection is up before the first due time.
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + spec.warmup;
    let end = start + spec.warmup + spec.duration;
    let pacer = match spec.rate {
        Some(rate) => {
            let total = slots_before(spec.warmup + spec.duration, rate);
            Some(Arc::new(Pacer::start(start.into_std(), rate, total)?))
        }
        None => None,
    };
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections.max(1) {
        let spec = spec.clone();
        let (next, requests, pacer) = (next.clone(), requests.clone(), pacer.clone());
        tasks.push(tokio::spawn(async move {
            connection(
                &spec,
                &*requests,
                &next,
                pacer.as_deref(),
                start,
                measure_from,
                end,
            )
            .await
        }));
    }
    let mut total = LoadResult::default();
    let mut last_done = measure_from;
    for task in tasks {
        let Ok((part, done)) = task.await else {
            continue;
        };
        total.requests += part.requests;
        total.ok += part.ok;
        merge_counts(&mut total.statuses, part.statuses);
        total.latency.merge(part.latency);
        total.service.merge(part.service);
        total.send_lag.merge(part.send_lag);
        last_done = last_done.max(done);
    }
    total.elapsed = last_done.saturating_duration_since(measure_from);
    Ok(total)
}

async fn connection<R: Requests + ?Sized>(
    spec: &LoadSpec,
    requests: &R,
    next: &AtomicU64,
    pacer: Option<&Pacer>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> (LoadResult, Instant) {
    let mut result = LoadResult::default();
    let mut last_done = measure_from;
    let mut conn: Option<Conn> = None;
    tokio::time::sleep_until(start).await;
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if spec.max_requests.is_some_and(|max| index >= max) {
            break;
        }
        let due = match pacer {
            // Open loop: the pacer releases the request at its due time.
            Some(pacer) => {
                let due = start + due_offset(index, pacer.rate());
                if due >= end {
                    break;
                }
                pacer.due().await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        let request = requests.request(index);
        let sent = Instant::now();
        let status = match exchange(&mut conn, &spec.authority, &request).await {
            Ok(status) => status.to_string(),
            Err(problem) => {
                conn = None;
                problem.to_string()
            }
        };
        let done = Instant::now();
        requests.answered(index, status.parse().unwrap_or(0), done);
        if due < measure_from {
            continue;
        }
        result.requests += 1;
        if status.starts_with('2') {
            result.ok += 1;
        }
        *result.statuses.entry(status).or_default() += 1;
        result.latency.record(latency(due - start, done - start));
        result.service.record(done - sent);
        result.send_lag.record(sent.saturating_duration_since(due));
        last_done = done;
    }
    (result, last_done)
}

#[derive(Debug)]
enum Failure {
    Io,
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Io => "io_error",
            Failure::Timeout => "timeout",
        })
    }
}

async fn exchange(
    conn: &mut Option<Conn>,
    authority: &str,
    request: &[u8],
) -> Result<u16, Failure> {
    if conn.as_ref().is_none_or(Conn::is_closed) {
        match Conn::connect(authority).await {
            Ok(fresh) => *conn = Some(fresh),
            Err(_) => {
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return Err(Failure::Io);
            }
        }
    }
    let Some(c) = conn.as_mut() else {
        return Err(Failure::Io);
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, c.send(request)).await {
        Ok(Ok(response)) => Ok(response.status),
        Ok(Err(_)) => Err(Failure::Io),
        Err(_) => Err(Failure::Timeout),
    }
}
