//! `GET /v1/datasources/{id}/event-counts`: accepted and rejected events per
//! minute of arrival, for the console's chart and the "last hour" column.
//!
//! Bounded at any table size: the range is at most [`MAX_RANGE_MS`] (one
//! day, so at most 1,440 minutes and 2,880 result rows, and the query says
//! `LIMIT` that), the scope is the prefix of both tables' sorting keys, and
//! the condition on `received_at` (the partition key's column) keeps
//! ClickHouse to the months the range touches. It counts stored rows: for a
//! short while after a fault a repeated write not yet merged may count twice
//! (`uniqExact` of the Kafka position would be exact, at the price of a hash
//! set per minute; the event log itself never shows the repeat).

use actix_web::{web, HttpResponse};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::datasources::existing;
use super::error::AdminError;
use crate::AppState;

/// Widest range one request may count.
const MAX_RANGE_MS: u64 = 24 * 3600 * 1000;
/// The range when none is given: the last hour.
const DEFAULT_RANGE_MS: u64 = 3600 * 1000;
const MINUTE_MS: u64 = 60_000;
/// Longest filter value (as the event log's).
const MAX_FILTER_CHARS: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CountsQuery {
    from: Option<String>,
    to: Option<String>,
    event_type: Option<String>,
}

#[derive(Debug, Row, Deserialize)]
struct CountRow {
    status: String,
    minute: u64,
    n: u64,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Bucket {
    minute: String,
    accepted: u64,
    rejected: u64,
}

/// The range asked for, checked: `[from, to)` in epoch ms.
fn range(query: &CountsQuery, now_ms: u64) -> Result<(u64, u64), AdminError> {
    let time = |name: &str, value: &Option<String>| {
        super::filter_time(name, value.as_deref()).map_err(AdminError::InvalidQuery)
    };
    let to = time("to", &query.to)?.unwrap_or(now_ms);
    let from = time("from", &query.from)?.unwrap_or(to.saturating_sub(DEFAULT_RANGE_MS));
    if from >= to {
        return Err(AdminError::InvalidQuery("from must be before to".into()));
    }
    if to - from > MAX_RANGE_MS {
        return Err(AdminError::InvalidQuery(
            "the range of event-counts is at most 24 hours".into(),
        ));
    }
    Ok((from, to))
}

fn sql(with_event_type: bool) -> String {
    let event_type = if with_event_type {
        " AND event_type = ?"
    } else {
        ""
    };
    let branch = |status: &str, table: &str| {
        format!(
            "SELECT '{status}' AS status, toUInt64(intDiv(received_at_ms, {MINUTE_MS})) AS minute FROM {table} \
             WHERE scope = ?{event_type} AND received_at >= toDateTime(?) AND received_at < toDateTime(?) \
             AND received_at_ms >= ? AND received_at_ms < ?"
        )
    };
    format!(
        "SELECT status, minute, count() AS n FROM ({} UNION ALL {}) \
         GROUP BY status, minute ORDER BY minute, status LIMIT {}",
        branch("accepted", "events"),
        branch("rejected", "rejected_events"),
        2 * (MAX_RANGE_MS / MINUTE_MS + 1)
    )
}

pub async fn per_minute(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: Result<web::Query<CountsQuery>, actix_web::Error>,
) -> Result<HttpResponse, AdminError> {
    let query = query.map_err(|e| AdminError::InvalidQuery(format!("query string: {e}")))?;
    existing(&state, &id)?;
    if query
        .event_type
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_FILTER_CHARS)
    {
        return Err(AdminError::InvalidQuery(format!(
            "eventType is longer than {MAX_FILTER_CHARS} characters"
        )));
    }
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let (from, to) = range(&query, now_ms)?;
    let mut statement = state.event_log.query(&sql(query.event_type.is_some()));
    for _ in 0..2 {
        statement = statement.bind(id.as_str());
        if let Some(event_type) = &query.event_type {
            statement = statement.bind(event_type.as_str());
        }
        // Whole seconds around the range for the partition key, then exact.
        statement = statement
            .bind(from / 1000)
            .bind(to.div_ceil(1000))
            .bind(from)
            .bind(to);
    }
    let rows: Vec<CountRow> =
        tokio::time::timeout(std::time::Duration::from_secs(30), statement.fetch_all())
            .await
            .map_err(|_| {
                AdminError::EventLogUnavailable("clickhouse did not answer within 30s".into())
            })?
            .map_err(|e| AdminError::EventLogUnavailable(e.to_string()))?;
    let mut buckets: Vec<(u64, Bucket)> = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for row in rows {
        if buckets.last().is_none_or(|(m, _)| *m != row.minute) {
            let minute = chrono::DateTime::from_timestamp_millis((row.minute * MINUTE_MS) as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            buckets.push((
                row.minute,
                Bucket {
                    minute,
                    ..Bucket::default()
                },
            ));
        }
        if let Some((_, bucket)) = buckets.last_mut() {
            if row.status == "accepted" {
                bucket.accepted += row.n;
                accepted += row.n;
            } else {
                bucket.rejected += row.n;
                rejected += row.n;
            }
        }
    }
    let iso = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": iso(from),
        "to": iso(to),
        "bucketSeconds": MINUTE_MS / 1000,
        "accepted": accepted,
        "rejected": rejected,
        "buckets": buckets.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: Option<&str>, to: Option<&str>) -> CountsQuery {
        CountsQuery {
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            event_type: None,
        }
    }

    #[test]
    fn the_range_defaults_to_the_last_hour_and_is_at_most_a_day() {
        let now = 1_800_000_000_000;
        assert_eq!(
            range(&query(None, None), now).ok(),
            Some((now - 3_600_000, now))
        );
        let day = range(
            &query(Some("2026-01-01T00:00:00Z"), Some("2026-01-02T00:00:00Z")),
            now,
        );
        assert!(day.is_ok());
        for (from, to) in [
            (Some("2026-01-01T00:00:00Z"), Some("2026-01-02T00:00:01Z")),
            (Some("2026-01-02T00:00:00Z"), Some("2026-01-01T00:00:00Z")),
            (Some("yesterday"), None),
        ] {
            assert!(range(&query(from, to), now).is_err(), "{from:?} {to:?}");
        }
    }

    #[test]
    fn the_query_is_bounded_and_bound() {
        let text = sql(true);
        assert!(text.ends_with("LIMIT 2882"), "{text}");
        assert_eq!(text.matches('?').count(), 12);
        assert!(text.contains("received_at >= toDateTime(?)"));
    }
}
