//! Erasure and suppression of a profile, as jobs (see [`crate::erasure`]):
//! `POST /v1/profiles/{id}/erasure`, `GET /v1/erasures/{jobId}`,
//! `GET /v1/erasures[?profileId=&limit=]` (the audit log, newest first).

use actix_web::http::header::LOCATION;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::{parse_json, AdminError};
use crate::erasure::jobs::JobView;
use crate::erasure::{ErasureError, Mode};
use crate::AppState;

/// Longest profile id an erasure takes (ids are bounded by the event size).
const MAX_ID_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ErasureRequest {
    mode: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    profile_id: Option<String>,
    limit: Option<String>,
}

/// The admin token's id in the audit record: `sha256:` and the first 16 hex
/// digits of the token's SHA-256 (names the token, reveals nothing of it).
fn token_id(state: &AppState) -> String {
    let hex: String = state.admin_token_hash[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn check_id(id: &str, what: &str) -> Result<(), AdminError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(AdminError::InvalidRequest(format!(
            "{what} must be 1 to {MAX_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

pub async fn request(
    state: web::Data<AppState>,
    profile_id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    check_id(&profile_id, "the profile id")?;
    let asked: ErasureRequest = parse_json(&body)?;
    let mode = Mode::parse(&asked.mode).ok_or_else(|| {
        AdminError::InvalidRequest(format!(
            "mode {:?} is not one of {}",
            asked.mode,
            Mode::NAMES.join(", ")
        ))
    })?;
    if !state.config_log.is_caught_up() {
        return Err(AdminError::EventLogUnavailable(
            "the config log is still being replayed".into(),
        ));
    }
    let (job, created) = state
        .erasures
        .request(&profile_id, mode, &token_id(&state))
        .await
        .map_err(|e| match e {
            ErasureError::UnknownProfile(_) => AdminError::NotFound(e.to_string()),
            ErasureError::Unavailable(why) => AdminError::EventLogUnavailable(why),
        })?;
    let location = format!("/v1/erasures/{}", job.job_id);
    let mut answer = if created {
        HttpResponse::Accepted()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer
        .insert_header((LOCATION, location))
        .json(JobView::from(job)))
}

pub async fn get(
    state: web::Data<AppState>,
    job_id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    check_id(&job_id, "the job id")?;
    let job = state
        .erasures
        .jobs()
        .get(&job_id)
        .await
        .map_err(AdminError::EventLogUnavailable)?
        .ok_or_else(|| AdminError::NotFound(format!("no erasure job {:?}", job_id.as_str())))?;
    Ok(HttpResponse::Ok().json(JobView::from(job)))
}

pub async fn list(
    state: web::Data<AppState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> Result<HttpResponse, AdminError> {
    let query = query.map_err(|e| AdminError::InvalidQuery(format!("query string: {e}")))?;
    if let Some(id) = &query.profile_id {
        check_id(id, "profileId")?;
    }
    let limit = match &query.limit {
        None => 100,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=crate::erasure::jobs::MAX_LIST).contains(n))
            .ok_or_else(|| {
                AdminError::InvalidQuery(format!(
                    "limit must be 1 to {}",
                    crate::erasure::jobs::MAX_LIST
                ))
            })?,
    };
    let jobs = state
        .erasures
        .jobs()
        .list(query.profile_id.as_deref(), limit)
        .await
        .map_err(AdminError::EventLogUnavailable)?;
    let jobs: Vec<JobView> = jobs.into_iter().map(JobView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "erasures": jobs })))
}
