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

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::batch::Batch;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, QUERY_TIMEOUT};

/// Longest a revoke waits for an insert: both tables' INSERTs, each bounded by
/// the store's timeout, and some slack.
const REVOKE_WAIT: Duration = Duration::from_secs(2 * QUERY_TIMEOUT.as_secs() + 5);

/// Whether an insert is in flight, for the revoke callback to wait on.
#[derive(Default)]
pub struct InsertGate {
    busy: Mutex<bool>,
    idle: Condvar,
}

impl InsertGate {
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
            let deadline = Instant::now() + REVOKE_WAIT;
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

/// One attempt. Each table's rows are forgotten as soon as they are written,
/// so a retry never writes them twice.
pub async fn write_once(
    store: &Store,
    metrics: &Metrics,
    batch: &mut Batch,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let rows = batch.rows();
    write_table(store, metrics, "events", &mut batch.events).await?;
    write_table(store, metrics, "rejected_events", &mut batch.rejected).await?;
    if rows > 0 {
        metrics
            .insert_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_rows.observe(rows as f64);
    }
    Ok(())
}

/// Writes one table's rows, if there are any, and forgets them once written.
async fn write_table<T>(
    store: &Store,
    metrics: &Metrics,
    table: &str,
    rows: &mut Vec<T>,
) -> Result<(), StoreError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    store.insert(table, rows).await?;
    metrics
        .rows_inserted
        .with_label_values(&[table])
        .inc_by(rows.len() as u64);
    *rows = Vec::new();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
