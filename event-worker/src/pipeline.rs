//! The consume → decode → batch → insert → commit loop.
//!
//! Contract: a Kafka offset is committed only after every record below it is in
//! ClickHouse (as an event or a rejection, and an accepted one in the profile
//! feed); a record written twice is absorbed by storage (the argument is in
//! [`crate::replay`]). Each owned partition is a state machine of
//! [`crate::partitions`] (assigned → loading → live → revoking), which keeps
//! the invariants: what is committed, for which partitions, and when.
//!
//! One task consumes, decodes and batches; a full batch is written by a task of
//! its own while the next one fills (see [`crate::writer`]), and is committed
//! before the next one is handed over, so commits stay in order. Rebalance
//! callbacks only run inside `recv()`; a revoke waits there until the insert in
//! flight is over, so when a partition is revoked the only thing left to do is
//! to forget its unwritten rows (the new owner reads them from the committed
//! offset); [`crate::partitions`] no longer names it for a commit.
//! While ClickHouse cannot be written, the owned partitions are paused (no new
//! records pile up) but the consumer is still polled, so it keeps its group
//! membership and still serves rebalances; the failed batch is retried with
//! exponential backoff (capped), in line, until it is written. Nothing is
//! dropped; rows ClickHouse refuses one by one become rejections (see
//! [`crate::writer`]).
//!
//! Before a batch is handed to the writer, the worker confirms with the group
//! coordinator that it still owns the batch's partitions, by committing the
//! offsets it starts from (a no-op for the group, refused with a fencing error
//! when this member's generation is stale). A worker that was frozen past its
//! session timeout therefore finds out before it writes, not after; it waits
//! for the rebalance that follows, which drops the rows of partitions it lost.
//! This keeps the window for a stale write down to a freeze between that
//! commit and the insert; what still slips through is absorbed by idempotent
//! storage (see [`crate::replay`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use proto::follower::ConfigFollower;

use crate::batch::{Batch, Limits};
use crate::blockage::{Blockage, Blocker};
use crate::dedup::RecentItems;
use crate::group::GroupConsumer;
use crate::http::Blocked;
use crate::kafka::{RebalanceEvent, WorkerContext};
use crate::metrics::Metrics;
use crate::partitions::{Partitions, Takeover};
use crate::profiles::ProfileCounter;
use crate::replay::Stored;
use crate::rows::{config_position, decode, is_suppressed, Decoded, Position};
use crate::store::{Store, StoreError};
use crate::writer::{self, InsertGate, Written};

/// How long past the first replayed record's Kafka timestamp the dedup window
/// is loaded from: the gateway stamps `receivedAt` before it produces, so a
/// record's timestamp can be this much later than its receive time.
const RECEIVE_TO_PRODUCE_SLACK_MS: u64 = 60_000;

pub struct Pipeline {
    group: GroupConsumer,
    rebalances: mpsc::Receiver<RebalanceEvent>,
    store: Store,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Event schemas, as of the config log.
    config: Arc<ConfigFollower>,
    profiles: ProfileCounter,
    /// The batch filling up.
    batch: Batch,
    /// The batch being written, at most one.
    writing: Option<JoinHandle<Written>>,
    /// A batch whose insert failed, retried before anything else is written.
    retrying: Batch,
    insert_gate: Arc<InsertGate>,
    /// The partitions this worker owns, each with its takeover state, stored
    /// offsets, dedup window and the offsets each batch lets us commit (see
    /// [`crate::partitions`]).
    partitions: Partitions,
    /// Records received while waiting for ClickHouse, handled before new ones.
    held: VecDeque<OwnedMessage>,
    /// What writing waits for now, if anything (partitions paused meanwhile).
    blockage: Blockage,
    /// Since when the batch being retried has been refused row by row with
    /// nothing written (see [`writer::write_isolating`]).
    refused_alone_since: Option<Instant>,
    shutdown: watch::Receiver<bool>,
    /// The consumer's fatal error, once it has one: the pipeline then ends
    /// (see [`Ended::ConsumerLost`]).
    consumer_lost: Option<String>,
}

/// Why a wait was cut short: shutdown, or a consumer that cannot go on.
struct ShuttingDown;

/// How [`Pipeline::run`] ended.
pub enum Ended {
    /// Shutdown was asked for.
    ShutDown,
    /// The consumer hit a fatal error (librdkafka's word for "unusable"):
    /// the caller starts over with a new consumer and a new pipeline. What
    /// this one held is not committed, so its partitions' next owner (maybe
    /// the new pipeline) reads it again, and storage absorbs what was
    /// written already (see [`crate::replay`]).
    ConsumerLost(String),
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        consumer: StreamConsumer<WorkerContext>,
        rebalances: mpsc::Receiver<RebalanceEvent>,
        insert_gate: Arc<InsertGate>,
        store: Store,
        topic: String,
        limits: Limits,
        metrics: Arc<Metrics>,
        config: Arc<ConfigFollower>,
        recent: RecentItems,
        blocked: Arc<Blocked>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            blockage: Blockage::new(metrics.clone(), blocked),
            group: GroupConsumer::new(consumer, topic),
            rebalances,
            store,
            limits,
            metrics,
            config,
            profiles: ProfileCounter::default(),
            batch: Batch::default(),
            writing: None,
            retrying: Batch::default(),
            insert_gate,
            partitions: Partitions::new(recent),
            held: VecDeque::new(),
            refused_alone_since: None,
            shutdown,
            consumer_lost: None,
        }
    }

    pub async fn run(mut self) -> Ended {
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Some(message) = self.held.pop_front() {
                if self.handle(message).await.is_err() {
                    break;
                }
            } else {
                let deadline = self.batch.deadline(&self.limits);
                tokio::select! {
                    _ = shutdown.changed() => break,
                    received = self.group.recv_or_tick() => match received {
                        Some(Ok(message)) => self.hold(message),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "kafka consumer error");
                            if self.lost_consumer() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        None => {}
                    },
                    _ = sleep_until(deadline), if deadline.is_some() => {}
                    written = in_flight(&mut self.writing) => {
                        self.writing = None;
                        if self.settle(written).await.is_err() {
                            break;
                        }
                    }
                }
                self.apply_rebalances();
            }
            let due = self
                .batch
                .deadline(&self.limits)
                .is_some_and(|d| d <= Instant::now());
            if (self.batch.is_full(&self.limits) || due) && self.flush().await.is_err() {
                break;
            }
        }
        let lost = self.consumer_lost.take();
        self.finish().await;
        match lost {
            Some(why) => Ended::ConsumerLost(why),
            None => Ended::ShutDown,
        }
    }

    /// Whether the consumer has a fatal error (remembered for [`Self::run`]).
    fn lost_consumer(&mut self) -> bool {
        if self.consumer_lost.is_none() {
            self.consumer_lost = self.group.fatal_error();
        }
        self.consumer_lost.is_some()
    }

    /// Final writes and commits on shutdown; records not written stay
    /// uncommitted and are read again by whoever owns their partition next.
    async fn finish(mut self) {
        // A new pipeline may follow (a lost consumer): it starts unblocked.
        self.blockage.clear();
        tracing::info!(
            rows = self.batch.rows(),
            "shutting down: writing the last batch"
        );
        let mut in_flight_written = true;
        if let Some(mut task) = self.writing.take() {
            in_flight_written = join(&mut task).await.result.is_ok();
            if in_flight_written {
                let offsets = self.partitions.written();
                self.commit(&offsets);
            }
        }
        // A later batch is committed only once every earlier one is written.
        if !in_flight_written || !self.retrying.is_empty() {
            tracing::warn!("a batch could not be written; it and later records will be read again");
        } else if !self.batch.is_empty() {
            if let Err(error) = self.confirm_ownership() {
                tracing::warn!(%error, "last batch not written: ownership not confirmed; it will be read again");
                self.group.unsubscribe();
                return;
            }
            self.partitions.cut();
            match writer::write_once(&self.store, &self.metrics, &mut self.batch).await {
                Ok(()) => {
                    let offsets = self.partitions.written();
                    self.commit(&offsets);
                }
                Err(error) => {
                    tracing::warn!(%error, "last batch not written; it will be read again")
                }
            }
        }
        self.group.unsubscribe();
        tracing::info!("stopped");
    }

    async fn handle(&mut self, message: OwnedMessage) -> Result<(), ShuttingDown> {
        let position = Position {
            partition: message.partition(),
            offset: message.offset(),
        };
        if !self.partitions.owns(position.partition) {
            return Ok(()); // revoked while the record waited
        }
        self.metrics.records_consumed.inc();
        let record_ms = message.timestamp().to_millis().unwrap_or(0);
        if let Some(takeover) = self.partitions.takeover_needed(position.partition) {
            let live = self.take_over(takeover, position.offset, record_ms).await?;
            // Takeover queries run only while no write is being retried (a
            // retry holds the records that arrive): if they waited for
            // ClickHouse, it is back now.
            self.resume_if_paused();
            if !live {
                return Ok(()); // revoked while loading
            }
        }
        let already_stored = self.partitions.stored(position.partition, position.offset);
        if already_stored == Some(Stored::Rejected) {
            self.metrics.records_skipped.inc();
            self.handled_without_row(position);
            return Ok(());
        }
        let payload = message.payload().unwrap_or_default();
        self.wait_for_config(config_position(payload)).await?;
        let config = self.config.snapshot();
        let decoded = decode(payload, position, record_ms, &config);
        if is_suppressed(&decoded, &config) {
            // Judged by the suppressions known now, not as of the record's
            // stamp: records already in Kafka when the profile was suppressed
            // are dropped too (the erasure module's guarantee). Nothing is
            // stored, so a re-read drops it again.
            self.metrics.events_suppressed.inc();
            self.handled_without_row(position);
            return Ok(());
        }
        if already_stored == Some(Stored::Accepted) {
            // Not written again; its profile feed is, in case the writer that
            // stored it stopped before the feed (idempotent, see crate::profiles).
            self.metrics.records_skipped.inc();
            match decoded {
                Decoded::Accepted(row) => {
                    self.batch.push_stored(row, position);
                    self.partitions.handled(position.partition, position.offset);
                }
                _ => self.handled_without_row(position),
            }
            return Ok(());
        }
        if let Decoded::Accepted(row) = &decoded {
            let repeat = self.partitions.is_repeat(
                position.partition,
                &row.scope,
                &row.item_id,
                row.received_at_ms,
            );
            if repeat {
                self.metrics.duplicates.inc();
                self.handled_without_row(position);
                return Ok(());
            }
        }
        if let Decoded::Accepted(row) = &decoded {
            self.profiles.observe(row, &self.metrics.profiles);
        }
        self.metrics.count_decoded(&decoded, position);
        self.batch.push(decoded, position, payload.len());
        self.partitions.handled(position.partition, position.offset);
        Ok(())
    }

    /// A record that needs no row (already stored, a repeat) still moves its
    /// partition on: the batch's commit steps over it.
    fn handled_without_row(&mut self, position: Position) {
        self.batch.touch(position.partition);
        self.partitions.handled(position.partition, position.offset);
    }

    /// Waits until this worker's config follower has applied the log up to
    /// the position the gateway stamped on a record, so the record is judged
    /// by the schemas the gateway knew when it accepted it, or later ones
    /// (and the same ones by whoever decodes it, see [`crate::rows::decode`]).
    async fn wait_for_config(&mut self, needed: Option<i64>) -> Result<(), ShuttingDown> {
        let Some(needed) = needed else {
            return Ok(());
        };
        let mut waited = Duration::ZERO;
        while self.config.snapshot().position < needed {
            if *self.shutdown.borrow() {
                return Err(ShuttingDown);
            }
            let step = Duration::from_secs(1);
            // One partition: the log's total order (see proto::follower).
            if !self.config.wait_applied(0, needed - 1, step).await {
                waited += step;
                self.metrics
                    .blocked
                    .with_label_values(&["config_log_behind"])
                    .set(1);
                tracing::warn!(needed, waited = ?waited, "waiting for the config log to reach a record's stamp");
            }
        }
        if !waited.is_zero() {
            self.metrics
                .blocked
                .with_label_values(&["config_log_behind"])
                .set(0);
        }
        Ok(())
    }

    /// The takeover of a partition whose first record since it was assigned
    /// is at `offset`: asks ClickHouse what it already holds of it (the offsets
    /// stored from `offset` on, see [`crate::replay`]; the itemIds received
    /// from one dedup window before this record on, see [`crate::dedup`]) and
    /// makes it live (see [`crate::partitions`]). `false` when it was revoked
    /// meanwhile.
    async fn take_over(
        &mut self,
        takeover: Takeover,
        offset: i64,
        record_ms: i64,
    ) -> Result<bool, ShuttingDown> {
        let partition = takeover.partition;
        let started = Instant::now();
        let stored = self
            .with_clickhouse(|store| async move { store.stored_offsets(partition, offset).await })
            .await?;
        if !stored.is_empty() {
            tracing::info!(
                partition,
                count = stored.len(),
                "records already stored will be skipped"
            );
        }
        let window = match self.partitions.dedup_window_ms() {
            None => Vec::new(),
            Some(window_ms) => {
                // By the records' own times, not the clock: a replay after a
                // long outage needs the window around what it replays.
                let first_ms =
                    (record_ms.max(0) as u64).saturating_sub(RECEIVE_TO_PRODUCE_SLACK_MS);
                let since_ms = first_ms.saturating_sub(window_ms);
                let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
                let until_ms = now_ms.max(first_ms) + 3_600_000;
                self.with_clickhouse(|store| async move {
                    store.recent_items(partition, since_ms, until_ms).await
                })
                .await?
            }
        };
        self.metrics
            .takeover_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(self.partitions.go_live(takeover, stored, window))
    }

    /// Hands the full batch to the writer, once the one before it is written
    /// and committed, and once this worker's ownership of the batch's
    /// partitions is confirmed (see the module doc).
    async fn flush(&mut self) -> Result<(), ShuttingDown> {
        if let Some(mut task) = self.writing.take() {
            let written = join(&mut task).await;
            self.settle(written).await?;
        }
        while let Err(error) = self.confirm_ownership() {
            // Rebalances applied while waiting drop lost partitions' rows.
            self.wait_out(Blocker::Ownership(error)).await?;
        }
        self.resume_if_paused();
        if self.batch.is_empty() {
            return Ok(());
        }
        // Suppressions applied since the batch's records were decoded.
        let dropped = self.batch.drop_suppressed(&self.config.snapshot());
        self.metrics.events_suppressed.inc_by(dropped as u64);
        self.partitions.cut();
        let batch = std::mem::take(&mut self.batch);
        self.writing = Some(writer::spawn(
            self.store.clone(),
            self.metrics.clone(),
            &self.insert_gate,
            batch,
        ));
        Ok(())
    }

    /// After a write attempt: retries what is left until it is written, then
    /// commits. Partitions revoked meanwhile are neither written nor committed
    /// (see [`crate::partitions`], invariant 3).
    async fn settle(&mut self, written: Written) -> Result<(), ShuttingDown> {
        let Written { mut batch, result } = written;
        if let Err(error) = result {
            batch.keep_partitions(&self.partitions.in_flight());
            self.retrying = batch;
            self.retry(error).await?;
        }
        let offsets = self.partitions.written();
        self.commit(&offsets);
        Ok(())
    }

    /// Confirms with the group coordinator that this worker still owns the
    /// partitions of the batch filling up, by committing the offsets the
    /// batch starts from: everything below them is written and committed
    /// already, so the commit changes nothing, but it is refused when this
    /// member's generation is stale.
    fn confirm_ownership(&self) -> KafkaResult<()> {
        self.group.commit_sync(&self.partitions.fence_offsets())
    }

    /// Writes `self.retrying` until ClickHouse takes it, pausing consumption
    /// meanwhile; nothing else is written (or in flight) until then.
    async fn retry(&mut self, mut error: StoreError) -> Result<(), ShuttingDown> {
        self.refused_alone_since = None;
        loop {
            let refused = error.is_refusal();
            self.wait_out(Blocker::ClickHouse(error)).await?;
            // A failed INSERT may still have been written (the answer was
            // lost, not the rows): rows found stored are not sent again.
            self.forget_stored_rows().await?;
            let attempt = if refused {
                let reject_lone = self
                    .refused_alone_since
                    .is_some_and(|since| since.elapsed() >= writer::REJECT_LONE_REFUSALS_AFTER);
                writer::write_isolating(&self.store, &self.metrics, &mut self.retrying, reject_lone)
                    .await
            } else {
                writer::write_once(&self.store, &self.metrics, &mut self.retrying).await
            };
            match attempt {
                Ok(()) => break,
                Err(next) => {
                    if refused && next.is_refusal() {
                        self.refused_alone_since.get_or_insert_with(Instant::now);
                    } else {
                        self.refused_alone_since = None;
                    }
                    error = next;
                }
            }
        }
        self.resume_if_paused();
        Ok(())
    }

    /// Drops from the batch being retried every row ClickHouse already holds.
    async fn forget_stored_rows(&mut self) -> Result<(), ShuttingDown> {
        for (partition, from) in self.retrying.lowest_offsets() {
            let offsets = self
                .with_clickhouse(|store| async move { store.stored_offsets(partition, from).await })
                .await?;
            if !offsets.is_empty() {
                let dropped = self.retrying.drop_stored(partition, &offsets);
                if dropped > 0 {
                    tracing::info!(
                        partition,
                        dropped,
                        "rows of a failed insert were stored after all; not writing them again"
                    );
                    self.metrics.records_skipped.inc_by(dropped as u64);
                }
            }
        }
        Ok(())
    }

    /// Runs a ClickHouse call until it succeeds, pausing consumption meanwhile.
    /// Does not resume: the caller does once what it waits for is done (a read
    /// that works says nothing about a write that keeps failing).
    async fn with_clickhouse<T, F, Fut>(&mut self, call: F) -> Result<T, ShuttingDown>
    where
        F: Fn(Store) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        loop {
            match call(self.store.clone()).await {
                Ok(value) => return Ok(value),
                Err(error) => self.wait_out(Blocker::ClickHouse(error)).await?,
            }
        }
    }

    /// Pauses the owned partitions and waits a backoff step (see
    /// [`crate::blockage`]) while still polling the consumer (group
    /// membership, rebalances).
    async fn wait_out(&mut self, blocker: Blocker) -> Result<(), ShuttingDown> {
        let (wait, newly) = self.blockage.enter(&blocker);
        if newly {
            self.group.pause(&self.partitions.owned());
        }
        let until = tokio::time::Instant::now() + wait;
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Err(ShuttingDown),
                received = self.group.recv_or_tick() => match received {
                    Some(Ok(message)) => self.hold(message),
                    Some(Err(_)) if self.lost_consumer() => return Err(ShuttingDown),
                    _ => {}
                },
                _ = tokio::time::sleep_until(until) => {
                    self.apply_rebalances();
                    return Ok(());
                }
            }
            self.apply_rebalances();
        }
    }

    fn resume_if_paused(&mut self) {
        if self.blockage.clear() {
            self.group.resume(&self.partitions.owned());
        }
    }

    /// Keeps a received record for handling. The rebalance callbacks that ran
    /// inside the `recv()` that returned it came *before* it, so they are
    /// applied first: applying them after would treat a record of a partition
    /// revoked and assigned again in that same `recv()` as one of the old
    /// assignment and drop it, and the next commit would step over it.
    fn hold(&mut self, message: OwnedMessage) {
        self.apply_rebalances();
        self.held.push_back(message);
    }

    /// Applies what the rebalance callbacks reported since the last call.
    fn apply_rebalances(&mut self) {
        while let Ok(event) = self.rebalances.try_recv() {
            match event {
                RebalanceEvent::Revoked(partitions) => {
                    tracing::info!(?partitions, "partitions revoked");
                    self.batch.drop_partitions(&partitions);
                    self.retrying.drop_partitions(&partitions);
                    self.held.retain(|m| !partitions.contains(&m.partition()));
                    self.partitions.revoke(&partitions);
                }
                RebalanceEvent::Assigned(partitions) => {
                    tracing::info!(?partitions, "partitions assigned");
                    self.partitions.assign(&partitions);
                    // librdkafka keeps a partition's pause across a revoke and
                    // a new assignment: a partition paused while it was ours
                    // before would stay paused forever unless set here.
                    if self.blockage.is_blocked() {
                        self.group.pause(&partitions);
                    } else {
                        self.group.resume(&partitions);
                    }
                }
            }
            self.metrics
                .assigned_partitions
                .set(self.partitions.count() as i64);
        }
    }

    /// Commits synchronously: when this returns the offsets are durable in Kafka
    /// (or the failure is logged and the same range is committed next time;
    /// until then a crash replays it and [`crate::replay`] skips what is stored).
    fn commit(&self, next_offsets: &BTreeMap<i32, i64>) {
        // The *next* offset to read (last handled + 1), as Kafka expects.
        match self.group.commit_sync(next_offsets) {
            Ok(()) => self.metrics.commits.with_label_values(&["ok"]).inc(),
            Err(error) => {
                self.metrics.commits.with_label_values(&["error"]).inc();
                tracing::warn!(%error, "offset commit failed; the range will be replayed and deduplicated if needed");
            }
        }
    }
}

/// The outcome of the insert in flight; never resolves when there is none.
async fn in_flight(writing: &mut Option<JoinHandle<Written>>) -> Written {
    match writing {
        Some(task) => join(task).await,
        None => std::future::pending().await,
    }
}

/// A writer task only ends by returning: if it panicked, the pipeline panics
/// too rather than commit past rows it never wrote.
async fn join(task: &mut JoinHandle<Written>) -> Written {
    match task.await {
        Ok(written) => written,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("writer task cancelled: {error}"),
        },
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}
