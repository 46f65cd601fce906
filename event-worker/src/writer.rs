//! The insert in flight: one batch is written while the next one fills.
//!
//! Decoding records and ClickHouse absorbing an INSERT take about as long as
//! each other, so doing them one after the other left each side idle half of
//! the time. The pipeline therefore hands a full batch to a task of its own and
//! goes on consuming; before it hands over the next one it waits for this one
//! and commits its offsets, so commits stay in order and at most two batches are
//! in memory.
//!
//! Why rebalances stay safe: a partition must never be written by a worker that
//! no longer owns it, or its new owner could ask ClickHouse what is stored
//! before our insert lands and write the same records again. The revoke
//! callback therefore waits on the [`InsertGate`] until the insert in flight is
//! over (written or failed) before librdkafka gives the partitions up; the
//! pipeline then drops the revoked partitions from whatever it has not written.
//! That keeps a rebalance from leaving duplicates behind in the common case; it
//! is not what makes a repeated write harmless (a frozen worker takes part in
//! no rebalance), idempotent storage is (see [`crate::replay`]).
//!
//! Order of one write: the accepted rows go to `events`, then their profile
//! columns to `profile_feed` (see [`crate::profiles`]), then the rejected rows
//! to `rejected_events`. Each step's rows are forgotten once written, so a
//! retry resumes where the failure was; a row `events` took stays due for the
//! feed until the feed took it (and a worker that stops in between leaves it
//! to the next owner, which feeds the records it finds stored again).
//!
//! Rows ClickHouse refuses: when the server answers a write with an exception
//! that may be about the data (see [`StoreError::is_refusal`]), [`isolate`]
//! splits the rows in halves until it has found the single rows refused; the
//! others are written, the refused ones become rejected events with the reason
//! `storage_refused`. A bad row therefore never stalls its partitions. A row
//! the table took but one of its materialized views refused (ClickHouse writes
//! the table's part before it pushes to the views, and does not take it back)
//! is stored: it stays what it is, counted in
//! `powehi_worker_view_refused_total`; likewise a row `events` took whose
//! profile update the profile views refuse stays accepted without it
//! (`powehi_worker_feed_refused_total`). When no
//! part of a batch can be written at all the server, not a row, is at fault:
//! the batch is retried as it is (with backoff), until it has been refused
//! that way, row by row, for [`REJECT_LONE_REFUSALS_AFTER`] (a batch made
//! only of bad rows, a lone bad event in quiet traffic); its rows are then
//! rejected like any refused row. A server that refuses everything for a
//! minute (a broken view, a full disk answered as an error) is waited out.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::future::Future;

use proto::reason::{Reason, ReasonCode};
use tokio::task::JoinHandle;

use crate::batch::Batch;
use crate::metrics::Metrics;
use crate::rows::{EventRow, RejectedRow};
use crate::store::{Store, StoreError};

/// Rows refused this long, with nothing of their batch written in between,
/// are rejected (see the module doc).
pub const REJECT_LONE_REFUSALS_AFTER: Duration = Duration::from_secs(120);

/// Most INSERTs one search for refused rows may send before it gives up and
/// leaves the rest to the next attempt (each attempt stores what it could).
const MAX_ISOLATION_INSERTS: usize = 256;

/// How much of ClickHouse's exception a `storage_refused` reason keeps.
const REFUSAL_MESSAGE_CHARS: usize = 500;

/// Whether an insert is in flight, for the revoke callback to wait on.
pub struct InsertGate {
    busy: Mutex<bool>,
    idle: Condvar,
    /// Longest a revoke waits: the INSERTs of one write, each bounded by the
    /// store's timeout, and some slack.
    revoke_wait: Duration,
}

impl Default for InsertGate {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl InsertGate {
    /// A gate whose revoke waits at most three INSERTs of `insert_timeout`.
    pub fn new(insert_timeout: Duration) -> Self {
        Self {
            busy: Mutex::new(false),
            idle: Condvar::new(),
            revoke_wait: insert_timeout * 3 + Duration::from_secs(5),
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(self: &Arc<Self>) -> GateGuard {
        *self.lock() = true;
        GateGuard(self.clone())
    }

    pub fn is_busy(&self) -> bool {
        *self.lock()
    }

    /// Blocks until no insert is in flight; false if that took longer than
    /// both tables' INSERT timeouts and some slack. Runs inside a rebalance
    /// callback, on a runtime thread: on a multi-threaded runtime the thread's
    /// other tasks (the insert itself, maybe) are handed to another thread
    /// meanwhile.
    pub fn wait_idle(&self) -> bool {
        let wait = || {
            let deadline = Instant::now() + self.revoke_wait;
            let mut busy = self.lock();
            while *busy {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                busy = self
                    .idle
                    .wait_timeout(busy, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            true
        };
        let multi_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_threaded {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        }
    }
}

/// Marks the gate idle when the insert task ends, however it ends.
struct GateGuard(Arc<InsertGate>);

impl Drop for GateGuard {
    fn drop(&mut self) {
        *self.0.lock() = false;
        self.0.idle.notify_all();
    }
}

/// A batch after one write attempt.
pub struct Written {
    /// What is left to write: nothing after a success.
    pub batch: Batch,
    pub result: Result<(), StoreError>,
}

/// Starts writing `batch` on a task of its own.
pub fn spawn(
    store: Store,
    metrics: Arc<Metrics>,
    gate: &Arc<InsertGate>,
    mut batch: Batch,
) -> JoinHandle<Written> {
    let guard = gate.enter();
    tokio::spawn(async move {
        let result = write_once(&store, &metrics, &mut batch).await;
        drop(guard);
        Written { batch, result }
    })
}

/// One attempt. Each step's rows are forgotten once written, so a retry does
/// not send them again.
pub async fn write_once(
    store: &Store,
    metrics: &Metrics,
    batch: &mut Batch,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let rows = batch.rows();
    if !batch.events.is_empty() {
        write_accepted(store, metrics, &batch.events).await?;
        let written = std::mem::take(&mut batch.events);
        batch.to_feed.extend(written);
    }
    if !batch.to_feed.is_empty() {
        store.insert_feed(&batch.to_feed).await?;
        batch.to_feed = Vec::new();
    }
    if !batch.rejected.is_empty() {
        write_rejected(store, metrics, &batch.rejected).await?;
        batch.rejected = Vec::new();
    }
    if rows > 0 {
        metrics
            .insert_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_rows.observe(rows as f64);
    }
    Ok(())
}

async fn write_accepted(
    store: &Store,
    metrics: &Metrics,
    rows: &[EventRow],
) -> Result<(), StoreError> {
    store.insert("events", rows).await?;
    metrics
        .rows_inserted
        .with_label_values(&["events"])
        .inc_by(rows.len() as u64);
    Ok(())
}

async fn write_rejected(
    store: &Store,
    metrics: &Metrics,
    rows: &[RejectedRow],
) -> Result<(), StoreError> {
    store.insert("rejected_events", rows).await?;
    metrics
        .rows_inserted
        .with_label_values(&["rejected_events"])
        .inc_by(rows.len() as u64);
    Ok(())
}

/// After a refusal: writes every row of `batch` that ClickHouse takes and turns
/// the ones it refuses into `storage_refused` rejections, written too.
/// `reject_lone` says the batch has been refused row by row for
/// [`REJECT_LONE_REFUSALS_AFTER`] already. On `Err` the batch keeps what is left
/// (the pipeline drops what turns out stored before the next attempt).
pub async fn write_isolating(
    store: &Store,
    metrics: &Metrics,
    batch: &mut Batch,
    reject_lone: bool,
) -> Result<(), StoreError> {
    // Each step leaves the batch holding exactly what is still to write, so an
    // early return loses nothing; the rows refused so far wait in `bad_*` and
    // go back into the batch on any error.
    let mut wrote_any = false;
    let mut last_refusal = None;
    let bad_events =
        write_accepted_isolating(store, metrics, batch, &mut wrote_any, &mut last_refusal).await?;
    let bad_rejected =
        match write_rejected_isolating(store, metrics, batch, &mut wrote_any, &mut last_refusal)
            .await
        {
            Ok(bad) => bad,
            Err(error) => {
                batch
                    .events
                    .extend(bad_events.into_iter().map(|(row, _)| row));
                return Err(error);
            }
        };
    let refused = bad_events.len() + bad_rejected.len();
    if refused > 0 && !wrote_any && !reject_lone {
        // Nothing at all could be written: the server, not a row, is at fault.
        batch
            .events
            .extend(bad_events.into_iter().map(|(row, _)| row));
        batch
            .rejected
            .extend(bad_rejected.into_iter().map(|(row, _)| row));
        return Err(
            last_refusal.unwrap_or_else(|| StoreError::Refused("every row of the batch".into()))
        );
    }
    let mut replacements: Vec<RejectedRow> = bad_events
        .into_iter()
        .map(|(row, error)| refused_event(row, &error))
        .collect();
    replacements.extend(
        bad_rejected
            .into_iter()
            .map(|(row, error)| refused_rejection(row, &error)),
    );
    if replacements.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        rows = replacements.len(),
        "clickhouse refused rows; they are stored as rejected events (storage_refused)"
    );
    metrics.rows_refused.inc_by(replacements.len() as u64);
    batch.rejected = replacements;
    write_rejected(store, metrics, &batch.rejected).await?;
    batch.rejected = Vec::new();
    Ok(())
}

/// The accepted rows of `batch`, row by row where refused, then their feed.
/// Returns the rows `events` refused (the ones it took despite a refusal go
/// on to the feed). On `Err` the batch holds every row not written.
async fn write_accepted_isolating(
    store: &Store,
    metrics: &Metrics,
    batch: &mut Batch,
    wrote_any: &mut bool,
    last_refusal: &mut Option<StoreError>,
) -> Result<Vec<(EventRow, String)>, StoreError> {
    let accepted = isolate(std::mem::take(&mut batch.events), |rows| async move {
        let result = write_accepted(store, metrics, &rows).await;
        (rows, result)
    })
    .await;
    let mut accepted = match accepted {
        Ok(found) => found,
        Err(stopped) => {
            batch.events = stopped.left;
            batch.to_feed.extend(stopped.written);
            return Err(stopped.error);
        }
    };
    *wrote_any |= accepted.wrote_any;
    if accepted.error.is_some() {
        *last_refusal = accepted.error.take();
    }
    batch.to_feed.extend(std::mem::take(&mut accepted.written));
    let taken = taken_by_the_table(&mut accepted.refused, |row| async move {
        let held = store.holds_event(&row).await;
        (row, held)
    })
    .await;
    let bad = std::mem::take(&mut accepted.refused);
    let taken = match taken {
        Ok(taken) => taken,
        Err(error) => {
            batch.events.extend(bad.into_iter().map(|(row, _)| row));
            return Err(error);
        }
    };
    metrics.view_refused.inc_by(taken.len() as u64);
    batch.to_feed.extend(taken);
    let fed = isolate(std::mem::take(&mut batch.to_feed), |rows| async move {
        let result = store.insert_feed(&rows).await;
        (rows, result)
    })
    .await;
    match restore_on_error(fed, &mut batch.to_feed) {
        Ok(fed) if !fed.refused.is_empty() => {
            tracing::warn!(
                rows = fed.refused.len(),
                "the profile views refused rows; those events stay stored without their profile update"
            );
            metrics.feed_refused.inc_by(fed.refused.len() as u64);
        }
        Ok(_) => {}
        Err(error) => {
            batch.events.extend(bad.into_iter().map(|(row, _)| row));
            return Err(error);
        }
    }
    Ok(bad)
}

/// The rejected rows of `batch`, row by row where refused. Returns the rows
/// `rejected_events` refused. On `Err` the batch holds every row not written.
async fn write_rejected_isolating(
    store: &Store,
    metrics: &Metrics,
    batch: &mut Batch,
    wrote_any: &mut bool,
    last_refusal: &mut Option<StoreError>,
) -> Result<Vec<(RejectedRow, String)>, StoreError> {
    let rejected = isolate(std::mem::take(&mut batch.rejected), |rows| async move {
        let result = write_rejected(store, metrics, &rows).await;
        (rows, result)
    })
    .await;
    let mut rejected = restore_on_error(rejected, &mut batch.rejected)?;
    *wrote_any |= rejected.wrote_any;
    if rejected.error.is_some() {
        *last_refusal = rejected.error.take();
    }
    let taken = taken_by_the_table(&mut rejected.refused, |row| async move {
        let held = store.holds_rejection(&row).await;
        (row, held)
    })
    .await;
    let bad = std::mem::take(&mut rejected.refused);
    match taken {
        Ok(taken) => {
            metrics.view_refused.inc_by(taken.len() as u64);
            Ok(bad)
        }
        Err(error) => {
            batch.rejected.extend(bad.into_iter().map(|(row, _)| row));
            Err(error)
        }
    }
}

/// Takes out of `refused` the rows their table holds after all (a view of the
/// table refused them, not the table) and returns them. `holds` takes a row
/// and hands it back with the answer. On an error the lookup stops and every
/// row stays in `refused` (the caller puts them back to be written again).
async fn taken_by_the_table<T, H, F>(
    refused: &mut Vec<(T, String)>,
    holds: H,
) -> Result<Vec<T>, StoreError>
where
    H: Fn(T) -> F,
    F: Future<Output = (T, Result<bool, StoreError>)>,
{
    let mut taken = Vec::new();
    let mut still = Vec::new();
    let mut pending = std::mem::take(refused).into_iter();
    for (row, error) in pending.by_ref() {
        match holds(row).await {
            (row, Ok(true)) => taken.push(row),
            (row, Ok(false)) => still.push((row, error)),
            (row, Err(lookup)) => {
                still.push((row, error));
                still.extend(pending);
                let unknown = String::from("not looked up");
                still.extend(taken.into_iter().map(|row| (row, unknown.clone())));
                *refused = still;
                return Err(lookup);
            }
        }
    }
    *refused = still;
    Ok(taken)
}

/// What [`isolate`] found.
struct Isolated<T> {
    /// The rows written.
    written: Vec<T>,
    refused: Vec<(T, String)>,
    wrote_any: bool,
    /// The last refusal, to report when nothing could be written.
    error: Option<StoreError>,
}

/// Why [`isolate`] stopped early, with the rows not written and those written.
struct Stopped<T> {
    error: StoreError,
    left: Vec<T>,
    written: Vec<T>,
}

/// Puts the rows not written back into the batch when the search stopped on
/// an error.
fn restore_on_error<T>(
    outcome: Result<Isolated<T>, Stopped<T>>,
    rows: &mut Vec<T>,
) -> Result<Isolated<T>, StoreError> {
    outcome.map_err(|stopped| {
        *rows = stopped.left;
        stopped.error
    })
}

/// Writes `rows` in halves, recursively, until every row is either written or
/// refused alone. Stops on an error that is not a refusal (or after
/// [`MAX_ISOLATION_INSERTS`]) and hands back every row not written.
/// `write` takes a chunk and hands it back with the outcome (owned chunks keep
/// the futures free of borrowed lifetimes).
async fn isolate<T, W, F>(rows: Vec<T>, write: W) -> Result<Isolated<T>, Stopped<T>>
where
    W: Fn(Vec<T>) -> F,
    F: Future<Output = (Vec<T>, Result<(), StoreError>)>,
{
    let mut found = Isolated {
        written: Vec::new(),
        refused: Vec::new(),
        wrote_any: false,
        error: None,
    };
    let mut pending = vec![rows];
    let mut inserts = 0;
    while let Some(chunk) = pending.pop() {
        if chunk.is_empty() {
            continue;
        }
        inserts += 1;
        let (mut chunk, result) = if inserts > MAX_ISOLATION_INSERTS {
            let error = StoreError::Refused(
                "too many refused rows; the rest waits for the next attempt".into(),
            );
            (chunk, Err(error))
        } else {
            write(chunk).await
        };
        match result {
            Ok(()) => {
                found.wrote_any = true;
                found.written.extend(chunk);
            }
            Err(error) if error.is_refusal() && chunk.len() == 1 => {
                let row = chunk.pop().expect("one row");
                found.refused.push((row, error.to_string()));
                found.error = Some(error);
            }
            Err(error) if error.is_refusal() && inserts <= MAX_ISOLATION_INSERTS => {
                let second = chunk.split_off(chunk.len() / 2);
                pending.push(second);
                pending.push(chunk);
                found.error = Some(error);
            }
            Err(error) => {
                let mut left: Vec<T> = pending.into_iter().flatten().collect();
                left.extend(chunk);
                left.extend(found.refused.into_iter().map(|(row, _)| row));
                return Err(Stopped {
                    error,
                    left,
                    written: found.written,
                });
            }
        }
    }
    Ok(found)
}

fn refusal_reason(error: &str) -> String {
    let message: String = error.chars().take(REFUSAL_MESSAGE_CHARS).collect();
    let reason = Reason::new(
        ReasonCode::StorageRefused,
        "$",
        format!("ClickHouse refused to store this event: {message}"),
    );
    serde_json::to_string(&[reason]).unwrap_or_else(|_| "[]".into())
}

/// An accepted event ClickHouse refused, as a rejection: what the row held,
/// as JSON, stands in for the raw event (the worker keeps no copy of it).
fn refused_event(row: EventRow, error: &str) -> RejectedRow {
    let raw = serde_json::json!({
        "eventType": row.event_type,
        "sessionId": row.session_id,
        "scope": row.scope,
        "profileId": row.profile_id,
        "itemId": row.item_id,
        "timeStampMs": row.event_time_ms,
        "properties": row.properties,
    });
    RejectedRow {
        event_id: row.event_id,
        scope: row.scope,
        event_type: row.event_type,
        session_id: row.session_id,
        profile_id: row.profile_id,
        event_time: row.event_time,
        event_time_ms: row.event_time_ms,
        received_at: row.received_at,
        received_at_ms: row.received_at_ms,
        stage: "worker".to_string(),
        reasons: refusal_reason(error),
        raw: raw.to_string(),
        kafka_partition: row.kafka_partition,
        kafka_offset: row.kafka_offset,
        client_ip: row.client_ip,
        user_agent: row.user_agent,
        origin: row.origin,
        referer: row.referer,
        policy: row.policy,
        replayed_at_ms: row.replayed_at_ms,
        replay_job: row.replay_job,
        record: row.record,
    }
}

/// A rejection ClickHouse refused: kept with its identifiers and the refusal,
/// without the content that may be what it refuses.
fn refused_rejection(row: RejectedRow, error: &str) -> RejectedRow {
    RejectedRow {
        reasons: refusal_reason(error),
        raw: String::new(),
        ..row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal() -> StoreError {
        StoreError::ClickHouse(clickhouse::error::Error::BadResponse(
            "Code: 395. DB::Exception: bad row".into(),
        ))
    }

    /// Writes into `stored` unless the chunk holds a row in `bad`.
    async fn isolate_with(rows: Vec<u32>, bad: &[u32]) -> (Vec<u32>, Vec<u32>, usize) {
        let stored = Mutex::new(Vec::new());
        let calls = Mutex::new(0);
        let found = isolate(rows, |chunk: Vec<u32>| {
            *calls.lock().expect("test step") += 1;
            let refused = chunk.iter().any(|r| bad.contains(r));
            if !refused {
                stored.lock().expect("test step").extend_from_slice(&chunk);
            }
            let result = if refused { Err(refusal()) } else { Ok(()) };
            std::future::ready((chunk, result))
        })
        .await;
        let Ok(found) = found else {
            panic!("a refusal never stops the search")
        };
        let mut stored = stored.into_inner().expect("test step");
        stored.sort_unstable();
        let mut refused: Vec<u32> = found.refused.into_iter().map(|(r, _)| r).collect();
        refused.sort_unstable();
        let calls = calls.into_inner().expect("test step");
        (stored, refused, calls)
    }

    #[tokio::test]
    async fn isolating_finds_exactly_the_refused_rows_and_writes_the_rest() {
        let (stored, refused, calls) = isolate_with((0..1000).collect(), &[17, 600]).await;
        assert_eq!(refused, vec![17, 600]);
        assert_eq!(stored.len(), 998);
        assert!(!stored.contains(&17) && !stored.contains(&600));
        assert!(
            calls <= 2 * 2 * 11,
            "a few inserts per bad row, not one per row: {calls}"
        );
    }

    #[tokio::test]
    async fn isolating_stops_on_an_unavailable_server_and_hands_every_row_back() {
        let outcome = isolate((0..10).collect::<Vec<u32>>(), |chunk: Vec<u32>| {
            std::future::ready((chunk, Err(StoreError::Timeout(Duration::from_secs(1)))))
        })
        .await;
        let Err(Stopped {
            error, mut left, ..
        }) = outcome
        else {
            panic!("a timeout is not a refusal")
        };
        assert!(!error.is_refusal());
        left.sort_unstable();
        assert_eq!(left, (0..10).collect::<Vec<u32>>());
    }

    #[test]
    fn waiting_on_an_idle_gate_returns_at_once() {
        let gate = Arc::new(InsertGate::default());
        assert!(!gate.is_busy());
        assert!(gate.wait_idle());
    }

    #[test]
    fn a_revoke_waits_until_the_insert_is_over() {
        let gate = Arc::new(InsertGate::default());
        let guard = gate.enter();
        assert!(gate.is_busy());
        let ended = Arc::new(Mutex::new(None));
        let writer = {
            let ended = ended.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                *ended.lock().expect("test step") = Some(Instant::now());
                drop(guard);
            })
        };
        assert!(gate.wait_idle());
        let returned = Instant::now();
        let ended = ended
            .lock()
            .expect("test step")
            .expect("the insert ended first");
        assert!(returned >= ended);
        assert!(!gate.is_busy());
        writer.join().expect("test step");
    }
}
