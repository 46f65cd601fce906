//! `GET /v1/datasources/{id}/events`: the event log of one data source.
//!
//! Newest first by received time, ties broken by event id and Kafka position,
//! which together identify a row. The cursor is the key of the last row served;
//! the next page continues strictly below it, so paging neither repeats nor
//! skips a row that was visible when paging began, however many events arrive
//! meanwhile (they sort above the cursor). Every filter value is bound as a
//! query parameter (the clickhouse crate escapes it); nothing is spliced.
//!
//! A rejected event a replay stored as accepted has two rows with one
//! identity (see event-worker's `replay` module): the accepted one sorts
//! first among equals (`status`), and the rejected one, next to it, is
//! served no more than a repeated write is ([`one_per_record`]). Asked for
//! rejected events only, the log leaves such rows out by an anti-join on the
//! data source's replayed rows of `events`.

use actix_web::{web, HttpResponse};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use proto::config::EventPolicy;

use super::datasources::existing;
use super::error::AdminError;
use crate::log_sql::{self, bound, ArrivalKey, Bind, Past};
use crate::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventLogQuery {
    event_type: Option<String>,
    session_id: Option<String>,
    profile_id: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Position of a row in the log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    r: u64,
    e: String,
    p: u32,
    o: u64,
}

#[derive(Debug, Row, Deserialize)]
struct LogRow {
    event_id: String,
    status: String,
    event_type: String,
    session_id: String,
    profile_id: String,
    event_time_ms: u64,
    corrected_time_ms: u64,
    received_at_ms: u64,
    properties: String,
    reasons: String,
    raw: String,
    source_id: String,
    source_type: String,
    target_id: String,
    target_type: String,
    schema_version: u32,
    kafka_partition: u32,
    kafka_offset: u64,
    client_ip: String,
    user_agent: String,
    origin: String,
    referer: String,
    context: String,
    policy: String,
    rejected_at_ms: u64,
    replayed_at_ms: u64,
    replay_job: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogEntry {
    event_id: String,
    status: String,
    event_type: String,
    session_id: String,
    profile_id: String,
    event_time: Option<String>,
    /// `eventTime` corrected for the sender's clock skew (by `sendAt`).
    corrected_time: Option<String>,
    received_at: String,
    properties: Option<Box<RawValue>>,
    reasons: Option<Box<RawValue>>,
    raw: Option<String>,
    source: Option<ItemView>,
    target: Option<ItemView>,
    schema_version: Option<u32>,
    /// Where the request came from; absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referer: Option<String>,
    /// The event's `context` object as its library sent it (accepted events;
    /// a rejected event's is in its `raw`).
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Box<RawValue>>,
    /// The data source's policy the event was ingested under.
    policy: EventPolicy,
    /// A replayed event (see the module doc): when it was first rejected
    /// (accepted entries), when the replay sent it and which job.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_job: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemView {
    item_id: String,
    item_type: String,
}

/// Filters after checking, in bindable form.
#[derive(Debug)]
struct Filters {
    scope: String,
    event_type: Option<String>,
    session_id: Option<String>,
    /// The profile asked for, then every id that reads as it; empty: any.
    profile_ids: Vec<String>,
    accepted: bool,
    rejected: bool,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    limit: u32,
    after: Option<Cursor>,
}

pub async fn list(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: Result<web::Query<EventLogQuery>, actix_web::Error>,
) -> Result<HttpResponse, AdminError> {
    let query = query.map_err(|e| AdminError::InvalidQuery(format!("query string: {e}")))?;
    existing(&state, &id)?;
    let mut filters = check(id.into_inner(), query.into_inner())?;
    if let Some(profile_id) = filters.profile_ids.first().cloned() {
        // A profile's log includes the sessions merged into it.
        filters.profile_ids = state
            .profiles
            .ids_of(&profile_id)
            .await
            .map_err(|e| AdminError::EventLogUnavailable(e.to_string()))?;
    }
    let (sql, binds) = build_sql(&filters);
    let statement = bound(state.event_log.query(&sql), binds);
    let fetched: Vec<LogRow> =
        tokio::time::timeout(std::time::Duration::from_secs(30), statement.fetch_all())
            .await
            .map_err(|_| {
                AdminError::EventLogUnavailable("clickhouse did not answer within 30s".into())
            })?
            .map_err(|e| AdminError::EventLogUnavailable(e.to_string()))?;
    let more = fetched.len() == fetch_limit(filters.limit) as usize;
    let rows = one_per_record(fetched, filters.limit as usize);
    let next_cursor = (more || rows.len() == filters.limit as usize)
        .then(|| rows.last().map(cursor_of))
        .flatten()
        .map(|c| encode_cursor(&c));
    let events: Vec<LogEntry> = rows.into_iter().map(entry).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events, "nextCursor": next_cursor })))
}

/// Longest filter value: ids and types are short; a longer one is a mistake
/// or a probe, and would reach ClickHouse's query size limit once escaped.
const MAX_FILTER_CHARS: usize = 1024;

fn check(scope: String, query: EventLogQuery) -> Result<Filters, AdminError> {
    for (name, value) in [
        ("eventType", &query.event_type),
        ("sessionId", &query.session_id),
        ("profileId", &query.profile_id),
        ("cursor", &query.cursor),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_FILTER_CHARS)
        {
            return Err(AdminError::InvalidQuery(format!(
                "{name} is longer than {MAX_FILTER_CHARS} characters"
            )));
        }
    }
    let (accepted, rejected) = match query.status.as_deref() {
        None => (true, true),
        Some("accepted") => (true, false),
        Some("rejected") => (false, true),
        Some(other) => {
            return Err(AdminError::InvalidQuery(format!(
                "status {other:?} must be accepted or rejected"
            )))
        }
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                AdminError::InvalidQuery(format!(
                    "limit {text:?} must be an integer from 1 to {MAX_LIMIT}"
                ))
            })?,
    };
    let time = |name: &str, value: Option<String>| {
        super::filter_time(name, value.as_deref()).map_err(AdminError::InvalidQuery)
    };
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok(Filters {
        scope,
        event_type: query.event_type,
        session_id: query.session_id,
        profile_ids: query.profile_id.into_iter().collect(),
        accepted,
        rejected,
        from_ms: time("from", query.from)?,
        to_ms: time("to", query.to)?,
        limit,
        after,
    })
}

/// One SELECT per table (each filtered on its own sorting key), merged and
/// ordered; `?` placeholders only.
fn build_sql(filters: &Filters) -> (String, Vec<Bind>) {
    let mut branches = Vec::new();
    let mut binds = Vec::new();
    let tables = [
        (filters.accepted, "events", "'accepted'", "corrected_time_ms", "properties", "'[]'", "''", "source_id, source_type, target_id, target_type, schema_version, context", "rejected_at_ms"),
        (filters.rejected, "rejected_events", "'rejected'", "event_time_ms AS corrected_time_ms", "'{}'", "reasons", "raw", "'' AS source_id, '' AS source_type, '' AS target_id, '' AS target_type, toUInt32(0) AS schema_version, '' AS context", "toUInt64(inserted_at) * 1000 AS rejected_at_ms"),
    ];
    for (wanted, table, status, corrected, properties, reasons, raw, rest, rejected_at) in tables {
        if !wanted {
            continue;
        }
        let mut conditions = vec!["scope = ?".to_string()];
        binds.push(Bind::Text(filters.scope.clone()));
        for (column, value) in [
            ("event_type", &filters.event_type),
            ("session_id", &filters.session_id),
        ] {
            if let Some(value) = value {
                conditions.push(format!("{column} = ?"));
                binds.push(Bind::Text(value.clone()));
            }
        }
        if !filters.profile_ids.is_empty() {
            conditions.push(format!(
                "profile_id IN ({})",
                vec!["?"; filters.profile_ids.len()].join(", ")
            ));
            binds.extend(filters.profile_ids.iter().cloned().map(Bind::Text));
        }
        for (condition, bind) in log_sql::received_within(filters.from_ms, filters.to_ms) {
            conditions.push(condition.into());
            binds.push(bind);
        }
        if let Some(c) = &filters.after {
            let (past, past_binds) = log_sql::past(
                &ArrivalKey {
                    received_at_ms: c.r,
                    event_id: c.e.clone(),
                    partition: c.p,
                    offset: c.o,
                },
                Past::Below,
            );
            conditions.push(past);
            binds.extend(past_binds);
        }
        if table == "rejected_events" && !filters.accepted {
            // No accepted twin to sort before it: left out here.
            conditions.push(
                "(kafka_partition, kafka_offset) NOT IN (SELECT kafka_partition, kafka_offset \
                 FROM events WHERE scope = ? AND replayed_at_ms != 0)"
                    .into(),
            );
            binds.push(Bind::Text(filters.scope.clone()));
        }
        branches.push(format!(
            "SELECT event_id, {status} AS status, event_type, session_id, profile_id, \
             event_time_ms, {corrected}, received_at_ms, {properties} AS properties, \
             {reasons} AS reasons, {raw} AS raw, {rest}, kafka_partition, kafka_offset, \
             {CONTEXT_COLUMNS}, policy, {rejected_at}, replayed_at_ms, replay_job FROM {table} WHERE {}",
            conditions.join(" AND ")
        ));
    }
    // Twice the page: a repeated write not merged away yet comes as two
    // identical rows (see one_per_record). A plain ORDER BY … LIMIT keeps
    // ClickHouse's top-N sort; LIMIT 1 BY before it would sort the whole range.
    let sql = format!(
        "SELECT event_id, status, event_type, session_id, profile_id, event_time_ms, corrected_time_ms, \
         received_at_ms, properties, reasons, raw, source_id, source_type, target_id, target_type, \
         schema_version, kafka_partition, kafka_offset, {CONTEXT_COLUMNS}, context, policy, rejected_at_ms, \
         replayed_at_ms, replay_job FROM ({}) \
         ORDER BY received_at_ms DESC, event_id DESC, kafka_partition DESC, kafka_offset DESC, \
         status ASC LIMIT {}",
        branches.join(" UNION ALL "),
        fetch_limit(filters.limit)
    );
    (sql, binds)
}

/// Rows asked of ClickHouse for a page of `limit`.
fn fetch_limit(limit: u32) -> u32 {
    limit * 2
}

/// A repeated write of one Kafka record that ClickHouse has not merged away
/// yet (see deploy/clickhouse/migrations/0001_events.sql) is two identical
/// rows, next to each other in the page's order: one is served. So is a
/// replayed event's accepted row, before its rejected one (see the module doc). A page can
/// come out shorter than `limit` after a fault; the cursor still continues
/// strictly below its last row, so nothing is skipped or repeated.
fn one_per_record(fetched: Vec<LogRow>, limit: usize) -> Vec<LogRow> {
    let mut rows: Vec<LogRow> = Vec::with_capacity(limit.min(fetched.len()));
    for row in fetched {
        let repeat = rows.last().is_some_and(|last| {
            (last.kafka_partition, last.kafka_offset) == (row.kafka_partition, row.kafka_offset)
        });
        if !repeat {
            rows.push(row);
        }
        if rows.len() == limit {
            break;
        }
    }
    rows
}

fn cursor_of(row: &LogRow) -> Cursor {
    Cursor {
        r: row.received_at_ms,
        e: row.event_id.clone(),
        p: row.kafka_partition,
        o: row.kafka_offset,
    }
}

/// Opaque to clients: hex of the JSON key (URL-safe without escaping).
fn encode_cursor(cursor: &Cursor) -> String {
    serde_json::to_vec(cursor)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(text: &str) -> Result<Cursor, AdminError> {
    let invalid = || {
        AdminError::InvalidCursor(
            "cursor is not one this API handed out; start again without it".into(),
        )
    };
    if !text.len().is_multiple_of(2) || text.len() > 2048 {
        return Err(invalid());
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)
}

/// Where a request came from, in both tables (0003_request_context.sql).
const CONTEXT_COLUMNS: &str = "client_ip, user_agent, origin, referer";

fn known(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn entry(row: LogRow) -> LogEntry {
    let accepted = row.status == "accepted";
    let time = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let item = |id: String, kind: String| {
        (!id.is_empty() || !kind.is_empty()).then_some(ItemView {
            item_id: id,
            item_type: kind,
        })
    };
    let replayed = row.replayed_at_ms > 0;
    LogEntry {
        rejected_at: (replayed && accepted && row.rejected_at_ms > 0)
            .then(|| time(row.rejected_at_ms))
            .flatten(),
        replayed_at: replayed.then(|| time(row.replayed_at_ms)).flatten(),
        replay_job: replayed.then_some(row.replay_job),
        event_time: if row.event_time_ms > 0 {
            time(row.event_time_ms)
        } else {
            None
        },
        corrected_time: if row.corrected_time_ms > 0 {
            time(row.corrected_time_ms)
        } else {
            None
        },
        received_at: time(row.received_at_ms).unwrap_or_default(),
        properties: accepted
            .then(|| RawValue::from_string(row.properties).ok())
            .flatten(),
        reasons: (!accepted)
            .then(|| RawValue::from_string(row.reasons).ok())
            .flatten(),
        raw: (!accepted).then_some(row.raw),
        source: item(row.source_id, row.source_type),
        target: item(row.target_id, row.target_type),
        schema_version: (accepted && row.schema_version > 0).then_some(row.schema_version),
        client_ip: known(row.client_ip),
        user_agent: known(row.user_agent),
        origin: known(row.origin),
        referer: known(row.referer),
        context: known(row.context).and_then(|text| RawValue::from_string(text).ok()),
        policy: EventPolicy::from_label(&row.policy),
        event_id: row.event_id,
        status: row.status,
        event_type: row.event_type,
        session_id: row.session_id,
        profile_id: row.profile_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let cursor = Cursor {
            r: 1_700_000_000_123,
            e: "id-'\"".into(),
            p: 3,
            o: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)).ok(), Some(cursor));
        for bad in ["zz", "abc", "7b7d", &"0".repeat(4000)] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    fn log_row(event_id: &str, partition: u32, offset: u64) -> LogRow {
        LogRow {
            event_id: event_id.into(),
            status: "accepted".into(),
            event_type: "view".into(),
            session_id: "s".into(),
            profile_id: "p".into(),
            event_time_ms: 1,
            corrected_time_ms: 1,
            received_at_ms: 2,
            properties: "{}".into(),
            reasons: "[]".into(),
            raw: String::new(),
            source_id: String::new(),
            source_type: String::new(),
            target_id: String::new(),
            target_type: String::new(),
            schema_version: 1,
            kafka_partition: partition,
            kafka_offset: offset,
            client_ip: String::new(),
            user_agent: String::new(),
            origin: String::new(),
            referer: String::new(),
            context: String::new(),
            policy: String::new(),
            rejected_at_ms: 0,
            replayed_at_ms: 0,
            replay_job: String::new(),
        }
    }

    #[test]
    fn a_record_written_twice_is_served_once() {
        let fetched = vec![
            log_row("c", 0, 9),
            log_row("b", 1, 4),
            log_row("b", 1, 4),
            log_row("a", 0, 2),
            log_row("z", 0, 1),
        ];
        let served = one_per_record(fetched, 3);
        let ids: Vec<&str> = served.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, vec!["c", "b", "a"]);
        // A replayed event: its accepted row sorts first among equals, the
        // rejected one with the same identity is not served.
        let mut rejected = log_row("r", 2, 7);
        rejected.status = "rejected".into();
        let served = one_per_record(vec![log_row("r", 2, 7), rejected, log_row("q", 0, 1)], 10);
        let statuses: Vec<(&str, &str)> = served
            .iter()
            .map(|r| (r.event_id.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(statuses, vec![("r", "accepted"), ("q", "accepted")]);
        let (sql, _) = build_sql(&Filters {
            scope: "demo".into(),
            event_type: None,
            session_id: None,
            profile_ids: Vec::new(),
            accepted: true,
            rejected: true,
            from_ms: None,
            to_ms: None,
            limit: 100,
            after: None,
        });
        assert!(
            sql.ends_with("LIMIT 200"),
            "twice the page, and no LIMIT BY: {sql}"
        );
        assert!(
            sql.contains("kafka_offset DESC, status ASC LIMIT"),
            "accepted before rejected among equals: {sql}"
        );
    }

    #[test]
    fn filter_values_are_placeholders_never_sql() {
        let query = EventLogQuery {
            event_type: Some("view' OR 1=1 --".into()),
            session_id: None,
            profile_id: None,
            status: Some("rejected".into()),
            from: None,
            to: None,
            limit: None,
            cursor: None,
        };
        let filters = check("demo".into(), query).map_err(|e| e.to_string());
        let Ok(filters) = filters else {
            panic!("{filters:?}")
        };
        let (sql, binds) = build_sql(&filters);
        assert!(!sql.contains("OR 1=1") && !sql.contains("demo"));
        assert!(
            !sql.contains("SELECT event_id, 'accepted'"),
            "status=rejected reads no accepted rows"
        );
        assert!(
            sql.contains("replayed_at_ms != 0"),
            "rejected rows a replay accepted are left out: {sql}"
        );
        assert_eq!(binds.len(), 3);
    }

    #[test]
    fn bad_status_limit_and_times_are_named() {
        let base = || EventLogQuery {
            event_type: None,
            session_id: None,
            profile_id: None,
            status: None,
            from: None,
            to: None,
            limit: None,
            cursor: None,
        };
        let message = |q: EventLogQuery| {
            check("s".into(), q)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(message(EventLogQuery {
            status: Some("maybe".into()),
            ..base()
        })
        .contains("status"));
        assert!(message(EventLogQuery {
            limit: Some("0".into()),
            ..base()
        })
        .contains("limit"));
        assert!(message(EventLogQuery {
            limit: Some("1001".into()),
            ..base()
        })
        .contains("limit"));
        assert!(message(EventLogQuery {
            from: Some("yesterday".into()),
            ..base()
        })
        .contains("from"));
    }
}
