//! Replay jobs: rejected events sent back through the raw topic once their
//! schema is fixed (`POST /v1/datasources/{id}/replays`, see
//! [`crate::admin`]).
//!
//! What a job does: it reads, oldest first and a step at a time
//! (`POWEHI_REPLAY_BATCH_EVENTS`), the rejected events its filters match that
//! a replay has not stored as accepted yet ([`Filters`]), and produces each to
//! the raw topic as the gateway produces any event (same key, so the same
//! partition as its session), with its original event id, received time and
//! request context, stamped with the config position the job was created at
//! (so the worker judges it by the schemas the dry run saw, or by the same
//! ones), and marked as a replay of the rejected record's Kafka position
//! ([`proto::ReplayMarker`]). The worker stores it under that position: why
//! that makes a replay safe to repeat, whole or in part, is argued in
//! event-worker's `replay` module.
//!
//! Where a job's state lives: in ClickHouse, table `replay_jobs` (one row
//! per state change, the newest wins), written after every step, so a job
//! outlives the gateway that runs it and every gateway answers for it. What
//! became of what it sent is not kept there but read from what the workers
//! stored (`events` and `rejected_events` rows carry the job id): the one
//! source of truth, which the job's runner could not know anyway. A job whose
//! runner died (kill -9, a crash) reads `interrupted` once its row is older
//! than [`STALE_AFTER`]; it is not resumed by itself: request the replay again,
//! which picks up what is still rejected (sending an event twice is harmless).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use clickhouse::{Client, Row};
use proto::config::{ConfigSnapshot, EventPolicy};
use proto::reason::{Reason, ReasonCode};
use proto::schema::validate_under;
use proto::topics::{record_key, ENVELOPE_VERSION};
use proto::{check_event, Envelope, ReplayMarker, RequestContext};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::log_sql::{self, bound, ArrivalKey, Bind, Past};
use crate::sink::OutRecord;
use crate::AppState;

/// Reasons a schema fix can cure: the worker's schema verdicts. The gateway's
/// envelope refusals (scope, timeStamp, size…) and storage refusals would be
/// refused again the same way, so they are never replayed.
pub const REPLAYABLE: &[ReasonCode] = &[
    ReasonCode::UnknownEventType,
    ReasonCode::MissingProperty,
    ReasonCode::WrongType,
    ReasonCode::MissingSource,
    ReasonCode::MissingTarget,
];

/// Replay jobs one gateway runs at once.
pub const MAX_RUNNING: usize = 4;

/// A running job saves its state at least this often.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A job still `running` whose state is older than this has lost its runner.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Attempts at one step (a read, a send, a save) before the job fails.
const ATTEMPTS: u32 = 5;

/// Every ClickHouse call of a job is bounded by this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The replay jobs of this gateway process.
pub struct Replays {
    /// Random per process start: which gateway runs a job.
    pub runner: String,
    running: Mutex<HashSet<String>>,
}

impl Default for Replays {
    fn default() -> Self {
        Self {
            runner: uuid::Uuid::now_v7().to_string(),
            running: Mutex::new(HashSet::new()),
        }
    }
}

impl Replays {
    /// Counts `job` as running here; false when [`MAX_RUNNING`] already are.
    pub fn start(&self, job: &str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.len() >= MAX_RUNNING {
            return false;
        }
        running.insert(job.to_string())
    }

    /// `job` no longer runs here.
    pub fn finish(&self, job: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(job);
    }

    /// Whether this process is running `job` now.
    pub fn is_running(&self, job: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.contains(job)
    }
}

/// Which rejected events a replay takes, checked (see `admin::replays`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    /// One of [`REPLAYABLE`]; `None`: any of them.
    pub reason_code: Option<ReasonCode>,
    pub event_type: Option<String>,
    /// Received at or after, epoch ms.
    pub from_ms: Option<u64>,
    /// Received before, epoch ms (a job sets it to its creation time when
    /// the request names none: what arrives later is not its business).
    pub to_ms: Option<u64>,
    pub max_events: u32,
}

/// A rejected event to replay, as `rejected_events` holds it.
#[derive(Debug, Row, Deserialize)]
pub struct Candidate {
    pub event_id: String,
    pub session_id: String,
    pub received_at_ms: u64,
    /// When the rejection was stored (its `inserted_at`), epoch ms.
    pub rejected_at_ms: u64,
    pub raw: String,
    pub kafka_partition: u32,
    pub kafka_offset: u64,
    pub client_ip: String,
    pub user_agent: String,
    pub origin: String,
    pub referer: String,
}

/// Where a job's reading stands: the sort key of the last candidate read.
type After = ArrivalKey;

/// The WHERE clause of the candidates of `filters` in data source `scope`:
/// rejected by the worker for a replayable reason, matching the filters, and
/// not stored as accepted by an earlier replay (an anti-join on the replayed
/// rows of the data source's range of `events`, which starts its sort key).
fn candidates_where(scope: &str, filters: &Filters) -> (String, Vec<Bind>) {
    let mut conditions = vec!["scope = ?".to_string(), "stage = 'worker'".to_string()];
    let mut binds = vec![Bind::Text(scope.to_string())];
    let codes: Vec<ReasonCode> = match filters.reason_code {
        Some(code) => vec![code],
        None => REPLAYABLE.to_vec(),
    };
    // `reasons` is a JSON array of {"code":…}: the code as serde writes it.
    conditions.push(format!(
        "({})",
        vec!["position(reasons, ?) > 0"; codes.len()].join(" OR ")
    ));
    binds.extend(
        codes
            .iter()
            .map(|code| Bind::Text(format!("\"code\":\"{}\"", code.as_str()))),
    );
    if let Some(event_type) = &filters.event_type {
        conditions.push("event_type = ?".into());
        binds.push(Bind::Text(event_type.clone()));
    }
    for (condition, bind) in log_sql::received_within(filters.from_ms, filters.to_ms) {
        conditions.push(condition.into());
        binds.push(bind);
    }
    conditions.push(
        "(kafka_partition, kafka_offset) NOT IN (SELECT kafka_partition, kafka_offset \
         FROM events WHERE scope = ? AND replayed_at_ms != 0)"
            .into(),
    );
    binds.push(Bind::Text(scope.to_string()));
    (conditions.join(" AND "), binds)
}

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "clickhouse did not answer within {QUERY_TIMEOUT:?}"
        )),
    }
}

/// How many distinct rejected events `filters` match now.
pub async fn count(client: &Client, scope: &str, filters: &Filters) -> Result<u64, String> {
    let (conditions, binds) = candidates_where(scope, filters);
    let sql = format!(
        "SELECT uniqExact(kafka_partition, kafka_offset) FROM rejected_events WHERE {conditions}"
    );
    bounded(bound(client.query(&sql), binds).fetch_one::<u64>()).await
}

/// Up to `limit` candidates after `after`, oldest first, each once (a
/// rejected record replayed and rejected again has two rows until merged).
async fn page(
    client: &Client,
    scope: &str,
    filters: &Filters,
    after: Option<&After>,
    limit: u32,
) -> Result<Vec<Candidate>, String> {
    let (mut conditions, mut binds) = candidates_where(scope, filters);
    if let Some(a) = after {
        let (past, past_binds) = log_sql::past(a, Past::Above);
        conditions.push_str(" AND ");
        conditions.push_str(&past);
        binds.extend(past_binds);
    }
    let sql = format!(
        "SELECT event_id, session_id, received_at_ms, toUInt64(inserted_at) * 1000 AS rejected_at_ms, \
         raw, kafka_partition, kafka_offset, client_ip, user_agent, origin, referer \
         FROM rejected_events WHERE {conditions} \
         ORDER BY received_at_ms, event_id, kafka_partition, kafka_offset, rejected_at_ms LIMIT {limit}"
    );
    let mut rows: Vec<Candidate> = bounded(bound(client.query(&sql), binds).fetch_all()).await?;
    // Copies of one record are next to each other: the first (the oldest
    // rejection) is kept.
    rows.dedup_by(|later, first| {
        (later.kafka_partition, later.kafka_offset) == (first.kafka_partition, first.kafka_offset)
    });
    Ok(rows)
}

/// What a dry run answers: how many candidates were judged, how many would
/// pass, and the others' reasons (events per code).
#[derive(Debug, Default)]
pub struct Verdicts {
    pub checked: u64,
    pub would_pass: u64,
    pub failing: BTreeMap<&'static str, u64>,
}

/// Judges the first `limit` candidates of `filters` against `config`, a page
/// at a time (memory holds one page, whatever `limit`).
pub async fn judge_all(
    client: &Client,
    scope: &str,
    filters: &Filters,
    limit: u32,
    page_size: u32,
    config: &ConfigSnapshot,
) -> Result<Verdicts, String> {
    let mut verdicts = Verdicts::default();
    let mut after = None;
    while verdicts.checked < u64::from(limit) {
        let want = u64::from(page_size).min(u64::from(limit) - verdicts.checked) as u32;
        let rows = page(client, scope, filters, after.as_ref(), want).await?;
        let Some(last) = rows.last() else { break };
        after = Some(after_of(last));
        for candidate in rows.iter().take(want as usize) {
            verdicts.checked += 1;
            match judge(candidate, scope, config) {
                Ok(()) => verdicts.would_pass += 1,
                Err(reasons) => count_codes(&reasons, &mut verdicts.failing),
            }
        }
    }
    Ok(verdicts)
}

fn after_of(row: &Candidate) -> After {
    After {
        received_at_ms: row.received_at_ms,
        event_id: row.event_id.clone(),
        partition: row.kafka_partition,
        offset: row.kafka_offset,
    }
}

/// The data source's unplanned-events policy now: a replay is judged under
/// it and its records carry it (a source switched to `accept` brings its
/// `unknown_event_type` rejections back untyped).
fn current_policy(config: &ConfigSnapshot, scope: &str) -> EventPolicy {
    config
        .data_sources
        .get(scope)
        .map(|source| source.policy())
        .unwrap_or_default()
}

/// What the worker would say of `candidate` against `config`'s schemas:
/// the same functions, the same schema (the newest as of the snapshot), under
/// the source's policy as of the snapshot.
pub fn judge(
    candidate: &Candidate,
    scope: &str,
    config: &ConfigSnapshot,
) -> Result<(), Vec<Reason>> {
    let raw = RawValue::from_string(candidate.raw.clone()).map_err(|e| {
        vec![Reason::new(
            ReasonCode::InvalidEvent,
            "$",
            format!("the stored event is not JSON: {e}"),
        )]
    })?;
    let fields = check_event(&raw, scope).map_err(|reason| vec![reason])?;
    let schema = config.schema_as_of(&fields.event_type, Some(config.position));
    validate_under(
        current_policy(config, scope),
        schema.map(|s| &s.schema),
        &fields,
    )
    .map(|_| ())
}

/// The raw-topic record that replays `candidate` for `job`.
fn record(
    candidate: &Candidate,
    scope: &str,
    policy: EventPolicy,
    job: &JobRow,
    replayed_at_ms: u64,
) -> Result<OutRecord, String> {
    let event = RawValue::from_string(candidate.raw.clone())
        .map_err(|e| format!("event {} is not JSON: {e}", candidate.event_id))?;
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        id: Cow::Borrowed(&candidate.event_id),
        scope: Cow::Borrowed(scope),
        received_at_ms: i64::try_from(candidate.received_at_ms).unwrap_or(i64::MAX),
        config_position: Some(job.config_position),
        context: RequestContext {
            ip: Cow::Borrowed(&candidate.client_ip),
            user_agent: Cow::Borrowed(&candidate.user_agent),
            origin: Cow::Borrowed(&candidate.origin),
            referer: Cow::Borrowed(&candidate.referer),
        },
        policy,
        refusals: Vec::new(),
        replay: Some(ReplayMarker {
            job: job.job_id.clone(),
            partition: candidate.kafka_partition,
            offset: candidate.kafka_offset,
            rejected_at_ms: candidate.rejected_at_ms,
            replayed_at_ms,
        }),
        event: &event,
    };
    Ok(OutRecord {
        key: record_key(scope, &candidate.session_id),
        payload: envelope.to_bytes(),
    })
}

/// A row of `replay_jobs`: one state of one job.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct JobRow {
    pub job_id: String,
    pub scope: String,
    /// [`Filters`] as JSON.
    pub filters: String,
    pub config_position: i64,
    /// `running`, `completed` or `failed`.
    pub state: String,
    pub matched: u64,
    pub sent: u64,
    pub error: String,
    pub runner: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

const JOB_COLUMNS: &str = "job_id, scope, filters, config_position, state, matched, sent, \
                           error, runner, created_at_ms, updated_at_ms";

impl JobRow {
    pub fn filters(&self) -> Option<Filters> {
        serde_json::from_str(&self.filters).ok()
    }
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// Saves `job`'s state as its newest (a version above the last one saved).
pub async fn save(client: &Client, job: &mut JobRow) -> Result<(), String> {
    job.updated_at_ms = now_ms().max(job.updated_at_ms + 1);
    let row = job.clone();
    bounded(async move {
        let mut insert = client.insert::<JobRow>("replay_jobs").await?;
        insert.write(&row).await?;
        insert.end().await
    })
    .await
}

/// The newest state of job `job_id` of data source `scope`.
pub async fn load(client: &Client, scope: &str, job_id: &str) -> Result<Option<JobRow>, String> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM replay_jobs WHERE scope = ? AND job_id = ? \
         ORDER BY updated_at_ms DESC LIMIT 1"
    );
    bounded(client.query(&sql).bind(scope).bind(job_id).fetch_optional()).await
}

/// What became of a job's events, as the workers stored them: accepted, and
/// rejected again (distinct rejected records, each counted once).
pub async fn outcome(client: &Client, scope: &str, job_id: &str) -> Result<(u64, u64), String> {
    let count = |table: &str| {
        format!(
            "SELECT uniqExact(kafka_partition, kafka_offset) FROM {table} \
             WHERE scope = ? AND replay_job = ?"
        )
    };
    let accepted = bounded(
        client
            .query(&count("events"))
            .bind(scope)
            .bind(job_id)
            .fetch_one::<u64>(),
    )
    .await?;
    let rejected = bounded(
        client
            .query(&count("rejected_events"))
            .bind(scope)
            .bind(job_id)
            .fetch_one::<u64>(),
    )
    .await?;
    Ok((accepted, rejected))
}

/// How a job reads to a client.
pub fn status(job: &JobRow, replays: &Replays) -> &'static str {
    match job.state.as_str() {
        "running" if job.runner == replays.runner && !replays.is_running(&job.job_id) => {
            "interrupted"
        }
        "running"
            if now_ms().saturating_sub(job.updated_at_ms) > STALE_AFTER.as_millis() as u64 =>
        {
            "interrupted"
        }
        "running" => "running",
        "completed" => "completed",
        _ => "failed",
    }
}

/// Runs `job` to its end (see the module doc); `job` is saved as running.
pub async fn run(state: actix_web::web::Data<AppState>, mut job: JobRow, filters: Filters) {
    let result = send_everything(&state, &mut job, &filters).await;
    match result {
        Ok(()) => job.state = "completed".into(),
        Err(error) => {
            tracing::warn!(job = %job.job_id, %error, "replay job failed");
            job.state = "failed".into();
            job.error = error;
        }
    }
    for attempt in 1..=ATTEMPTS {
        match save(&state.event_log, &mut job).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(job = %job.job_id, %error, attempt, "cannot save a replay job's end");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
    }
    tracing::info!(job = %job.job_id, state = %job.state, sent = job.sent, "replay job ended");
    state.replays.finish(&job.job_id);
}

/// Reads, sends and saves a step at a time until nothing is left or the
/// job's bound is reached.
async fn send_everything(
    state: &AppState,
    job: &mut JobRow,
    filters: &Filters,
) -> Result<(), String> {
    let client = &state.event_log;
    let step = state.config.replay_batch_events;
    let pause = Duration::from_millis(state.config.replay_pause_ms);
    let mut after: Option<After> = None;
    while job.sent < u64::from(filters.max_events) {
        let want = (u64::from(step)).min(u64::from(filters.max_events) - job.sent) as u32;
        let scope = job.scope.clone();
        let rows = retried("reading rejected events", || {
            page(client, &scope, filters, after.as_ref(), want)
        })
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some(after_of(last));
        let replayed_at_ms = now_ms();
        let policy = current_policy(&state.config_log.snapshot(), &job.scope);
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            match record(row, &job.scope, policy, job, replayed_at_ms) {
                Ok(record) => records.push(record),
                Err(problem) => tracing::warn!(job = %job.job_id, problem, "not replayable"),
            }
        }
        retried("sending to kafka", || async {
            state
                .sink
                .send_all(&records)
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
        // What was sent: a row that is not JSON (never a worker's schema
        // rejection) is logged above and left out, so `pending` can reach 0.
        job.sent += records.len() as u64;
        state.metrics.replayed_events.inc_by(records.len() as u64);
        retried("saving the job's progress", || {
            let mut saved = job.clone();
            async move { save(client, &mut saved).await.map(|()| saved) }
        })
        .await
        .map(|saved| *job = saved)?;
        // The pause, with the job's state saved often enough to read as alive.
        let mut left = pause;
        while !left.is_zero() {
            let nap = left.min(HEARTBEAT);
            tokio::time::sleep(nap).await;
            left -= nap;
            let mut saved = job.clone();
            if save(client, &mut saved).await.is_ok() {
                *job = saved;
            }
        }
    }
    Ok(())
}

/// `call`, tried [`ATTEMPTS`] times with a growing pause.
async fn retried<T, F, Fut>(what: &str, call: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                tracing::warn!(what, %error, attempt, "replay step failed, retrying");
                last = error;
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
    }
    Err(format!("{what}: {last}"))
}

/// Reasons counted by code, for a dry run's answer.
fn count_codes(reasons: &[Reason], into: &mut BTreeMap<&'static str, u64>) {
    let mut seen = HashSet::new();
    for reason in reasons {
        if seen.insert(reason.code) {
            *into.entry(reason.code.as_str()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters() -> Filters {
        Filters {
            reason_code: None,
            event_type: Some("purchase' OR 1=1".into()),
            from_ms: Some(5),
            to_ms: None,
            max_events: 10,
        }
    }

    #[test]
    fn the_candidates_are_bound_never_spliced() {
        let (sql, binds) = candidates_where("demo", &filters());
        assert!(!sql.contains("OR 1=1") && !sql.contains("demo"), "{sql}");
        assert!(sql.contains("stage = 'worker'"));
        assert!(sql.contains("replayed_at_ms != 0"), "the anti-join: {sql}");
        // scope, five codes, event type, from, scope of the anti-join.
        assert_eq!(binds.len(), 1 + REPLAYABLE.len() + 2 + 1);
        let one = Filters {
            reason_code: Some(ReasonCode::UnknownEventType),
            ..filters()
        };
        let (sql, binds) = candidates_where("demo", &one);
        assert_eq!(sql.matches("position(reasons, ?)").count(), 1);
        assert!(binds
            .iter()
            .any(|b| matches!(b, Bind::Text(t) if t == "\"code\":\"unknown_event_type\"")));
    }

    #[test]
    fn a_replay_record_carries_the_rejected_records_identity() {
        let candidate = Candidate {
            event_id: "e1".into(),
            session_id: "s1".into(),
            received_at_ms: 1_700_000_000_123,
            rejected_at_ms: 1_700_000_001_000,
            raw: r#"{"eventType":"purchase","sessionId":"s1"}"#.into(),
            kafka_partition: 2,
            kafka_offset: 41,
            client_ip: "203.0.113.9".into(),
            user_agent: String::new(),
            origin: String::new(),
            referer: String::new(),
        };
        let job = JobRow {
            job_id: "j1".into(),
            scope: "demo".into(),
            filters: "{}".into(),
            config_position: 17,
            state: "running".into(),
            matched: 1,
            sent: 0,
            error: String::new(),
            runner: "r".into(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let Ok(out) = record(&candidate, "demo", EventPolicy::default(), &job, 9_000) else {
            panic!("a record")
        };
        assert_eq!(out.key, record_key("demo", "s1"), "the session's partition");
        let envelope = Envelope::from_bytes(&out.payload);
        let Ok(envelope) = envelope else {
            panic!("{envelope:?}")
        };
        assert_eq!(envelope.id, "e1");
        assert_eq!(envelope.received_at_ms, 1_700_000_000_123);
        assert_eq!(envelope.config_position, Some(17));
        assert_eq!(envelope.context.ip, "203.0.113.9");
        assert_eq!(envelope.event.get(), candidate.raw);
        assert_eq!(
            envelope.replay,
            Some(ReplayMarker {
                job: "j1".into(),
                partition: 2,
                offset: 41,
                rejected_at_ms: 1_700_000_001_000,
                replayed_at_ms: 9_000,
            })
        );
    }
}
