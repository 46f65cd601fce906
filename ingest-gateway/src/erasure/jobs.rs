//! The `erasures` table (migration 0005): job store and audit log in one.
//! A job's every state change is a new row with a later `updated_at_ms`;
//! reads take the latest row of each job (`FINAL`).

use std::time::Duration;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most jobs one list answers.
pub const MAX_LIST: u32 = 1000;

/// One state of one job, as stored.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct JobRow {
    pub job_id: String,
    pub profile_id: String,
    pub mode: String,
    pub requested_at_ms: u64,
    pub requested_by: String,
    pub state: String,
    pub updated_at_ms: u64,
    pub finished_at_ms: u64,
    pub merged_ids: u32,
    pub outcome: String,
    pub error: String,
}

/// The states a job goes through; `done` and `failed` end it.
pub const FINAL_STATES: [&str; 2] = ["done", "failed"];

impl JobRow {
    pub fn is_finished(&self) -> bool {
        FINAL_STATES.contains(&self.state.as_str())
    }
}

/// A job as the API answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    pub profile_id: String,
    pub mode: String,
    pub state: String,
    pub requested_at: Option<String>,
    /// The admin token's id (see the README: never the token).
    pub requested_by: String,
    pub updated_at: Option<String>,
    pub finished_at: Option<String>,
    /// Anonymous session profiles merged into the profile that it covered.
    pub merged_ids: u32,
    pub outcome: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<JobRow> for JobView {
    fn from(row: JobRow) -> Self {
        let time = |ms: u64| {
            (ms > 0)
                .then(|| chrono::DateTime::from_timestamp_millis(ms as i64))
                .flatten()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        };
        Self {
            outcome: serde_json::from_str(&row.outcome).unwrap_or(serde_json::json!({})),
            error: Some(row.error).filter(|e| !e.is_empty()),
            requested_at: time(row.requested_at_ms),
            updated_at: time(row.updated_at_ms),
            finished_at: time(row.finished_at_ms),
            job_id: row.job_id,
            profile_id: row.profile_id,
            mode: row.mode,
            state: row.state,
            requested_by: row.requested_by,
            merged_ids: row.merged_ids,
        }
    }
}

const COLUMNS: &str = "job_id, profile_id, mode, requested_at_ms, requested_by, state, \
                       updated_at_ms, finished_at_ms, merged_ids, outcome, error";

#[derive(Clone)]
pub struct JobStore {
    client: Client,
}

impl JobStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn put(&self, row: &JobRow) -> Result<(), String> {
        bounded(async {
            let mut insert = self.client.insert::<JobRow>("erasures").await?;
            insert.write(row).await?;
            insert.end().await
        })
        .await
    }

    pub async fn get(&self, job_id: &str) -> Result<Option<JobRow>, String> {
        let sql = format!("SELECT {COLUMNS} FROM erasures FINAL WHERE job_id = ?");
        let rows: Vec<JobRow> = bounded(self.client.query(&sql).bind(job_id).fetch_all()).await?;
        Ok(rows.into_iter().next())
    }

    /// Newest first; of one profile when `profile_id` is given.
    pub async fn list(&self, profile_id: Option<&str>, limit: u32) -> Result<Vec<JobRow>, String> {
        let filter = if profile_id.is_some() {
            "WHERE profile_id = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM erasures FINAL {filter} \
             ORDER BY requested_at_ms DESC, job_id DESC LIMIT {}",
            limit.min(MAX_LIST)
        );
        let mut query = self.client.query(&sql);
        if let Some(id) = profile_id {
            query = query.bind(id);
        }
        bounded(query.fetch_all()).await
    }

    /// The job of `profile_id` and `mode` still running, if any.
    pub async fn unfinished(&self, profile_id: &str, mode: &str) -> Result<Option<JobRow>, String> {
        let sql = format!(
            "SELECT {COLUMNS} FROM erasures FINAL WHERE profile_id = ? AND mode = ? \
             AND state NOT IN ('done', 'failed') ORDER BY requested_at_ms DESC LIMIT 1"
        );
        let rows: Vec<JobRow> = bounded(
            self.client
                .query(&sql)
                .bind(profile_id)
                .bind(mode)
                .fetch_all(),
        )
        .await?;
        Ok(rows.into_iter().next())
    }

    /// Jobs not finished whose last row is older than `stale_ms`: their
    /// gateway stopped (a running job writes a row every heartbeat).
    pub async fn abandoned(&self, now_ms: u64, stale_ms: u64) -> Result<Vec<JobRow>, String> {
        let sql = format!(
            "SELECT {COLUMNS} FROM erasures FINAL WHERE state NOT IN ('done', 'failed') \
             AND updated_at_ms < ? ORDER BY requested_at_ms LIMIT 100"
        );
        bounded(
            self.client
                .query(&sql)
                .bind(now_ms.saturating_sub(stale_ms))
                .fetch_all(),
        )
        .await
    }
}

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| format!("erasures table: {e}")),
        Err(_) => Err(format!(
            "erasures table: no answer within {QUERY_TIMEOUT:?}"
        )),
    }
}
