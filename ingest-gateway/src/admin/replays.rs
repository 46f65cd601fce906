//! `POST /v1/datasources/{id}/replays` and `GET /v1/datasources/{id}/replays/{job}`:
//! replay jobs of rejected events (what a job does is [`crate::replays`]'s).
//!
//! A dry run answers at once how many rejected events the filters match and
//! how many would pass the current schemas (judged by the worker's own
//! functions); nothing is sent and no job is kept. Otherwise the job is saved
//! as running and answered 202; it runs in the background of this gateway.

use actix_web::http::header::LOCATION;
use actix_web::{web, HttpResponse};
use proto::reason::ReasonCode;
use serde::Deserialize;
use serde_json::json;

use super::datasources::existing;
use super::error::{parse_json, AdminError};
use crate::replays::{self, Filters, JobRow, REPLAYABLE};
use crate::AppState;

/// Longest `eventType` filter (an event type is far shorter).
const MAX_FILTER_CHARS: usize = 1024;

/// Longest job id looked up (ours are UUIDs).
const MAX_JOB_ID_CHARS: usize = 64;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    reason_code: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    dry_run: bool,
    max_events: Option<u32>,
}

fn invalid(message: String) -> AdminError {
    AdminError::InvalidRequest(message)
}

fn unavailable(error: String) -> AdminError {
    AdminError::EventLogUnavailable(error)
}

fn check(request: &ReplayRequest, max_events: u32) -> Result<Filters, AdminError> {
    let reason_code = match request.reason_code.as_deref() {
        None => None,
        Some(text) => {
            let code = REPLAYABLE.iter().copied().find(|c| c.as_str() == text);
            let names: Vec<&str> = REPLAYABLE.iter().map(|c| c.as_str()).collect();
            Some(code.ok_or_else(|| {
                invalid(format!(
                    "reasonCode {text:?} cannot be replayed: it must be one of {} (a schema \
                     fix can cure those; the gateway's envelope refusals would be refused again)",
                    names.join(", ")
                ))
            })?)
        }
    };
    if let Some(event_type) = &request.event_type {
        if event_type.is_empty() || event_type.chars().count() > MAX_FILTER_CHARS {
            return Err(invalid(format!(
                "eventType must be 1 to {MAX_FILTER_CHARS} characters"
            )));
        }
    }
    let time = |name: &str, value: &Option<String>| {
        super::filter_time(name, value.as_deref()).map_err(invalid)
    };
    let (from_ms, to_ms) = (time("from", &request.from)?, time("to", &request.to)?);
    if let (Some(from), Some(to)) = (from_ms, to_ms) {
        if from >= to {
            return Err(invalid("from must be earlier than to".into()));
        }
    }
    let max = match request.max_events {
        None => max_events,
        Some(n) if (1..=max_events).contains(&n) => n,
        Some(n) => {
            return Err(invalid(format!(
                "maxEvents {n} must be from 1 to {max_events} (POWEHI_REPLAY_MAX_EVENTS)"
            )))
        }
    };
    Ok(Filters {
        reason_code,
        event_type: request.event_type.clone(),
        from_ms,
        to_ms,
        max_events: max,
    })
}

fn iso(ms: u64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn filters_json(filters: &Filters) -> serde_json::Value {
    json!({
        "reasonCode": filters.reason_code.map(ReasonCode::as_str),
        "eventType": filters.event_type,
        "from": filters.from_ms.and_then(iso),
        "to": filters.to_ms.and_then(iso),
        "maxEvents": filters.max_events,
    })
}

pub async fn create(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let source = existing(&state, &id)?;
    let request: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        parse_json(&body)?
    };
    let mut filters = check(&request, state.config.replay_max_events)?;
    let config = state.config_log.snapshot();
    let client = &state.event_log;
    if request.dry_run {
        return dry_run(&state, &source.id, &filters, &config).await;
    }
    let created_at_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    // What arrives after the request is not this job's business.
    filters.to_ms = Some(
        filters
            .to_ms
            .map_or(created_at_ms, |to| to.min(created_at_ms)),
    );
    let matched = replays::count(client, &source.id, &filters)
        .await
        .map_err(unavailable)?;
    if matched > u64::from(filters.max_events) {
        return Err(AdminError::TooManyEvents(format!(
            "{matched} rejected events match, over the limit of {} for one replay: narrow the \
             filters (a time range) or raise maxEvents up to POWEHI_REPLAY_MAX_EVENTS",
            filters.max_events
        )));
    }
    let job_id = uuid::Uuid::now_v7().to_string();
    if !state.replays.start(&job_id) {
        return Err(AdminError::Conflict(format!(
            "{} replay jobs are running on this gateway already; try again once one is over",
            replays::MAX_RUNNING
        )));
    }
    let mut job = JobRow {
        job_id: job_id.clone(),
        scope: source.id.clone(),
        filters: serde_json::to_string(&filters).unwrap_or_default(),
        config_position: config.position,
        state: "running".into(),
        matched,
        sent: 0,
        error: String::new(),
        runner: state.replays.runner.clone(),
        created_at_ms,
        updated_at_ms: 0,
    };
    if let Err(error) = replays::save(client, &mut job).await {
        state.replays.finish(&job_id);
        return Err(unavailable(error));
    }
    tracing::info!(job = %job_id, scope = %source.id, matched, "replay job started");
    actix_web::rt::spawn(replays::run(state.clone(), job.clone(), filters));
    let view = view(&state, &job).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((
            LOCATION,
            format!("/v1/datasources/{}/replays/{job_id}", source.id),
        ))
        .json(view))
}

async fn dry_run(
    state: &AppState,
    scope: &str,
    filters: &Filters,
    config: &proto::config::ConfigSnapshot,
) -> Result<HttpResponse, AdminError> {
    let client = &state.event_log;
    let matched = replays::count(client, scope, filters)
        .await
        .map_err(unavailable)?;
    let verdicts = replays::judge_all(
        client,
        scope,
        filters,
        filters.max_events,
        state.config.replay_batch_events,
        config,
    )
    .await
    .map_err(unavailable)?;
    let checked = verdicts.checked;
    Ok(HttpResponse::Ok().json(json!({
        "dryRun": true,
        "dataSource": scope,
        "filters": filters_json(filters),
        "matched": matched,
        "checked": checked,
        "truncated": matched > checked,
        "wouldPass": verdicts.would_pass,
        "wouldFail": checked - verdicts.would_pass,
        "failing": verdicts.failing,
    })))
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (id, job_id) = path.into_inner();
    let source = existing(&state, &id)?;
    let not_found =
        || AdminError::NotFound(format!("no replay job {job_id:?} for data source {id:?}"));
    if job_id.is_empty() || job_id.chars().count() > MAX_JOB_ID_CHARS {
        return Err(not_found());
    }
    let job = replays::load(&state.event_log, &source.id, &job_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(view(&state, &job).await?))
}

/// A job as clients read it: its state, what it sent, and what the workers
/// made of it so far.
async fn view(state: &AppState, job: &JobRow) -> Result<serde_json::Value, AdminError> {
    let (accepted, rejected) = replays::outcome(&state.event_log, &job.scope, &job.job_id)
        .await
        .map_err(unavailable)?;
    Ok(json!({
        "id": job.job_id,
        "dataSource": job.scope,
        "status": replays::status(job, &state.replays),
        "filters": job.filters().as_ref().map(filters_json),
        "createdAt": iso(job.created_at_ms),
        "updatedAt": iso(job.updated_at_ms),
        "matched": job.matched,
        "sent": job.sent,
        "accepted": accepted,
        "rejected": rejected,
        "pending": job.sent.saturating_sub(accepted + rejected),
        "error": (!job.error.is_empty()).then_some(&job.error),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(request: ReplayRequest) -> String {
        check(&request, 100)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn each_bad_filter_is_named() {
        assert!(message(ReplayRequest {
            reason_code: Some("scope_mismatch".into()),
            ..Default::default()
        })
        .contains("reasonCode \"scope_mismatch\" cannot be replayed"));
        assert!(message(ReplayRequest {
            event_type: Some(String::new()),
            ..Default::default()
        })
        .contains("eventType"));
        assert!(message(ReplayRequest {
            from: Some("yesterday".into()),
            ..Default::default()
        })
        .contains("from \"yesterday\""));
        assert!(message(ReplayRequest {
            from: Some("2024-01-02T00:00:00Z".into()),
            to: Some("2024-01-01T00:00:00Z".into()),
            ..Default::default()
        })
        .contains("earlier"));
        assert!(message(ReplayRequest {
            max_events: Some(101),
            ..Default::default()
        })
        .contains("maxEvents 101"));
        let Ok(filters) = check(
            &ReplayRequest {
                reason_code: Some("unknown_event_type".into()),
                ..Default::default()
            },
            100,
        ) else {
            panic!("valid")
        };
        assert_eq!(filters.reason_code, Some(ReasonCode::UnknownEventType));
        assert_eq!(filters.max_events, 100);
    }
}
