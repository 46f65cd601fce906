//! Erasure and suppression of a profile (`POST /v1/profiles/{id}/erasure`),
//! run as a job whose every state is a row of the `erasures` table (job store
//! and audit log: [`jobs`]).
//!
//! Modes: `delete` removes every row about the profile and the anonymous
//! sessions merged into it ([`deletion`]); `suppress` makes every gateway and
//! worker drop its events from then on; `suppress_and_delete` does both.
//!
//! A job, step by step:
//! 1. **Suppress** (suppress modes): a [`SuppressionRecord`] naming the
//!    profile and its merged session profiles is written to the config log
//!    (conditionally, merged with what is there: repeating it changes
//!    nothing). A gateway drops an accepted event of theirs before Kafka; a
//!    worker drops a record of theirs instead of storing it, judged by the
//!    suppressions it knows *now*, not as of the record's stamp, once when
//!    it decodes the record and again when it hands the batch to its writer
//!    (a batch that waited is filtered by the suppressions applied since).
//! 2. **Grace** (`POWEHI_ERASURE_GRACE_MS`): every gateway and worker follows
//!    the log within about a second; the job waits this long for them.
//! 3. **Drain**: the raw topic's end offsets are read, then the job waits until
//!    the workers' committed offsets pass them ([`drain`]): every record in
//!    Kafka by then — the ones acknowledged before the request among them —
//!    has been stored or dropped by a worker.
//! 4. **Delete** (delete modes): the profile's merged sessions are read again
//!    (a session identified while the job drained joins them, and the
//!    suppression), the rows about them are counted, deleted with mutations
//!    and waited for, and counted again; rows that arrived meanwhile make
//!    another round, up to [`DELETE_ROUNDS`].
//! 5. **Outcome**: `done` with the rows found per table, or `failed` with why.
//!
//! The guarantee of `suppress_and_delete`, and the windows it leaves:
//! - An event accepted after a gateway applied the suppression never reaches
//!   Kafka. One that reached Kafka is stamped with its gateway's config
//!   position; a worker validates a record only once its own config is at
//!   least that stamp, so a record stamped after the suppression is dropped.
//! - A record stamped before it (in Kafka before the request, or from a
//!   gateway that had not applied it yet) is dropped by a worker that knows
//!   the suppression, or stored by one that does not; if it was in Kafka at
//!   step 3 it is stored before step 4, which deletes it. What remains is a
//!   record stamped before the suppression *and* written to Kafka after step
//!   3 read the end *and* processed by a worker that had not applied the
//!   suppression after the grace (a gateway and a worker both lagging the
//!   config log by more than the grace, or a request whose Kafka delivery
//!   took longer than the grace): step 4's second count catches it if it was
//!   stored by then; later, nothing does. A worker frozen between its last
//!   check of a batch (suppressions, then ownership) and its INSERT, that
//!   wakes up after step 4 and writes, is the same window.
//! - Anonymous events of a session that identifies as the profile *after*
//!   the suppression stay: the identify event is dropped, so nothing links
//!   that session to the profile.
//! - Kafka keeps the raw records until its own retention (`retention.ms`):
//!   a consumer group reading the raw topic from the start again would store
//!   them again unless the profile is suppressed.
//!
//! `delete` alone is steps 3-5: what was in Kafka at the request is stored
//! and then deleted; later events are stored as usual. `suppress` alone is
//! steps 1-3: rows stored before stay; the job is done once every record in
//! Kafka at the request went through a worker (dropped when the worker knew
//! the suppression: normally, but not guaranteed, see above).
//!
//! Every step is idempotent, so a job can run again from the start: a job
//! whose gateway stopped (its row not refreshed for a minute, [`STALE_MS`]) is
//! resumed by any gateway within half a minute ([`Erasures::resume_abandoned`]);
//! two gateways resuming the same job at once do the same work twice, harmlessly.
//! A failed job is asked again with a new request.

pub mod deletion;
pub mod drain;
pub mod jobs;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::config::{suppression_key, ConfigRecord, SuppressionRecord, MAX_SUPPRESSED_IDS};
use serde_json::json;

use crate::configlog::ConfigLog;
use crate::metrics::Metrics;
use crate::profiles::ProfileStore;
use deletion::Deletion;
use drain::Drain;
use jobs::{JobRow, JobStore};

/// How often a running job refreshes its row.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A job not finished whose row is older than this lost its gateway.
pub const STALE_MS: u64 = 60_000;
/// How often each gateway looks for abandoned jobs.
const RESUME_EVERY: Duration = Duration::from_secs(30);
/// Deletion rounds before a job gives up on rows that keep arriving.
pub const DELETE_ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Delete,
    Suppress,
    SuppressAndDelete,
}

impl Mode {
    pub const NAMES: [&'static str; 3] = ["delete", "suppress", "suppress_and_delete"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "delete" => Some(Self::Delete),
            "suppress" => Some(Self::Suppress),
            "suppress_and_delete" => Some(Self::SuppressAndDelete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Suppress => "suppress",
            Self::SuppressAndDelete => "suppress_and_delete",
        }
    }

    fn suppresses(self) -> bool {
        self != Self::Delete
    }

    fn deletes(self) -> bool {
        self != Self::Suppress
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("no event belongs to profile {0:?}: nothing to delete (suppress accepts any id)")]
    UnknownProfile(String),
    #[error("{0}")]
    Unavailable(String),
}

pub struct Settings {
    pub database: String,
    pub brokers: String,
    pub raw_topic: String,
    pub consumer_group: String,
    pub grace: Duration,
    pub timeout: Duration,
}

pub struct Erasures {
    jobs: JobStore,
    client: clickhouse::Client,
    profiles: ProfileStore,
    config_log: Arc<ConfigLog>,
    drain: Drain,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Jobs this gateway is running.
    running: Mutex<HashSet<String>>,
}

/// A job being run: its latest row, rewritten at each state and heartbeat.
pub struct Run<'a> {
    erasures: &'a Erasures,
    row: tokio::sync::Mutex<JobRow>,
}

impl Run<'_> {
    /// Writes the job's row again with `change` applied and a later time.
    async fn write(&self, change: impl FnOnce(&mut JobRow)) {
        let mut row = self.row.lock().await;
        change(&mut row);
        row.updated_at_ms = now_ms().max(row.updated_at_ms + 1);
        if let Err(error) = self.erasures.jobs.put(&row).await {
            tracing::warn!(%error, job = %row.job_id, "erasure: cannot record the job's state");
        }
    }

    /// Refreshes the row, so other gateways see the job is alive.
    pub async fn beat(&self) {
        self.write(|_| {}).await;
    }

    async fn state(&self, state: &str) {
        let job = self.row.lock().await.job_id.clone();
        tracing::info!(%job, state, "erasure");
        self.write(|row| row.state = state.to_string()).await;
    }
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

impl Erasures {
    pub fn new(
        client: clickhouse::Client,
        config_log: Arc<ConfigLog>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Self {
            jobs: JobStore::new(client.clone()),
            profiles: ProfileStore::new(client.clone()),
            drain: Drain::new(
                &settings.brokers,
                &settings.raw_topic,
                &settings.consumer_group,
            ),
            client,
            config_log,
            settings,
            metrics,
            running: Mutex::new(HashSet::new()),
        }
    }

    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    /// Takes a request: the job already running for the same profile and
    /// mode (`false`), else a new one, recorded and started (`true`).
    pub async fn request(
        self: &Arc<Self>,
        asked_id: &str,
        mode: Mode,
        requested_by: &str,
    ) -> Result<(JobRow, bool), ErasureError> {
        let unavailable = |e: String| ErasureError::Unavailable(e);
        let (profile_id, _, known) = self
            .profiles
            .erasure_targets(asked_id)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let snapshot = self.config_log.snapshot();
        let suppressed = snapshot.suppressions.contains_key(&profile_id);
        if mode == Mode::Delete && !known && !suppressed {
            return Err(ErasureError::UnknownProfile(asked_id.to_string()));
        }
        if let Some(job) = self
            .jobs
            .unfinished(&profile_id, mode.as_str())
            .await
            .map_err(unavailable)?
        {
            if job.updated_at_ms + STALE_MS < now_ms() {
                self.spawn(job.clone()); // its gateway stopped
            }
            return Ok((job, false));
        }
        let now = now_ms();
        let outcome = if asked_id == profile_id {
            json!({})
        } else {
            json!({ "askedId": asked_id })
        };
        let row = JobRow {
            job_id: uuid::Uuid::now_v7().simple().to_string(),
            profile_id,
            mode: mode.as_str().to_string(),
            requested_at_ms: now,
            requested_by: requested_by.to_string(),
            state: "pending".to_string(),
            updated_at_ms: now,
            finished_at_ms: 0,
            merged_ids: 0,
            outcome: outcome.to_string(),
            error: String::new(),
        };
        self.jobs.put(&row).await.map_err(unavailable)?;
        self.spawn(row.clone());
        Ok((row, true))
    }

    /// Runs `row`'s job in the background unless this gateway runs it already.
    fn spawn(self: &Arc<Self>, row: JobRow) {
        let fresh = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.job_id.clone());
        if !fresh {
            return;
        }
        let erasures = self.clone();
        tokio::spawn(async move {
            let job_id = row.job_id.clone();
            erasures.run(row).await;
            erasures
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&job_id);
        });
    }

    async fn run(&self, row: JobRow) {
        let mode = Mode::parse(&row.mode);
        let run = Run {
            erasures: self,
            row: tokio::sync::Mutex::new(row),
        };
        let result = match mode {
            Some(mode) => self.execute(mode, &run).await,
            None => Err("unknown mode".to_string()),
        };
        let state = if result.is_ok() { "done" } else { "failed" };
        self.metrics.erasures.with_label_values(&[state]).inc();
        run.write(|row| {
            row.state = state.to_string();
            row.finished_at_ms = now_ms();
            match result {
                Ok(outcome) => {
                    let mut merged: serde_json::Value =
                        serde_json::from_str(&row.outcome).unwrap_or(json!({}));
                    if let (Some(into), Some(from)) = (merged.as_object_mut(), outcome.as_object())
                    {
                        into.extend(from.clone());
                    }
                    row.outcome = merged.to_string();
                    row.error.clear();
                }
                Err(error) => {
                    tracing::warn!(job = %row.job_id, %error, "erasure failed");
                    row.error = error;
                }
            }
        })
        .await;
    }

    async fn execute(&self, mode: Mode, run: &Run<'_>) -> Result<serde_json::Value, String> {
        let (job_id, profile_id) = {
            let row = run.row.lock().await;
            (row.job_id.clone(), row.profile_id.clone())
        };
        let mut ids = self.ids(&profile_id).await?;
        if mode.suppresses() {
            run.state("suppressing").await;
            self.suppress(&profile_id, &ids, &job_id).await?;
            let count = ids.len() as u32;
            run.write(|row| row.merged_ids = count).await;
            tokio::time::sleep(self.settings.grace).await;
        }
        run.state("draining").await;
        let ends = self.drain.end_offsets().await?;
        self.drain
            .wait_passed(&ends, self.settings.timeout, run)
            .await?;
        if !mode.deletes() {
            return Ok(json!({ "suppressedIds": ids.len() + 1 }));
        }
        run.state("deleting").await;
        let deletion = Deletion {
            client: &self.client,
            database: &self.settings.database,
            timeout: self.settings.timeout,
        };
        let mut found: Option<BTreeMap<String, u64>> = None;
        let mut rounds = 0;
        loop {
            // Sessions identified as the profile while the job drained join.
            let before = ids.len();
            ids.extend(self.ids(&profile_id).await?);
            if mode.suppresses() && ids.len() > before {
                self.suppress(&profile_id, &ids, &job_id).await?;
            }
            let count = ids.len() as u32;
            run.write(|row| row.merged_ids = count).await;
            let all: Vec<String> = std::iter::once(profile_id.clone())
                .chain(ids.iter().cloned())
                .collect();
            let counts = deletion.count(&all, run).await?;
            let left: u64 = counts.iter().map(|(_, n)| n).sum();
            found.get_or_insert_with(|| counts.into_iter().collect());
            if left == 0 {
                break;
            }
            if rounds == DELETE_ROUNDS {
                return Err(format!(
                    "{left} rows about the profile remained after {rounds} deletion rounds \
                     (events still arriving?); ask again"
                ));
            }
            deletion.delete(&all, &job_id, run).await?;
            rounds += 1;
        }
        Ok(json!({
            "rowsFound": found.unwrap_or_default(),
            "deletionRounds": rounds,
        }))
    }

    /// The merged session profiles of `profile_id`: what ClickHouse says
    /// now, plus what a suppression of it already names (a resumed job whose
    /// deletion removed the aliases still knows them).
    async fn ids(&self, profile_id: &str) -> Result<BTreeSet<String>, String> {
        let (_, merged, _) = self
            .profiles
            .erasure_targets(profile_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut ids: BTreeSet<String> = merged.into_iter().collect();
        if let Some(known) = self.config_log.snapshot().suppressions.get(profile_id) {
            ids.extend(known.merged_ids.iter().cloned());
        }
        ids.remove(profile_id);
        if ids.len() > MAX_SUPPRESSED_IDS {
            return Err(format!(
                "the profile has {} merged sessions, over the {MAX_SUPPRESSED_IDS} an erasure covers",
                ids.len()
            ));
        }
        Ok(ids)
    }

    /// Writes (or widens) the profile's suppression; nothing when the log
    /// already names every id.
    async fn suppress(
        &self,
        profile_id: &str,
        ids: &BTreeSet<String>,
        job_id: &str,
    ) -> Result<(), String> {
        let key = suppression_key(profile_id);
        self.config_log
            .update(|snapshot| {
                let mut merged: BTreeSet<String> = ids.clone();
                if let Some(known) = snapshot.suppressions.get(profile_id) {
                    if ids.iter().all(|id| known.merged_ids.contains(id)) {
                        return Ok::<_, anyhow::Error>((None, ()));
                    }
                    merged.extend(known.merged_ids.iter().cloned());
                }
                let record = ConfigRecord::Suppression(SuppressionRecord {
                    profile_id: profile_id.to_string(),
                    merged_ids: merged.into_iter().collect(),
                    job_id: job_id.to_string(),
                });
                Ok((Some((key.clone(), record)), ()))
            })
            .await
            .map_err(|e| format!("writing the suppression to the config log: {e}"))
    }

    /// Resumes, now and every half minute, the jobs whose gateway stopped.
    pub async fn resume_abandoned(self: Arc<Self>) {
        loop {
            if self.config_log.is_caught_up() {
                match self.jobs.abandoned(now_ms(), STALE_MS).await {
                    Ok(jobs) => {
                        for job in jobs {
                            tracing::info!(job = %job.job_id, state = %job.state, "erasure: resuming a job whose gateway stopped");
                            self.spawn(job);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "erasure: cannot look for abandoned jobs")
                    }
                }
            }
            tokio::time::sleep(RESUME_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_their_names_only() {
        for name in Mode::NAMES {
            assert_eq!(Mode::parse(name).map(Mode::as_str), Some(name));
        }
        assert_eq!(Mode::parse("erase"), None);
        assert_eq!(Mode::parse("Delete"), None);
    }
}
