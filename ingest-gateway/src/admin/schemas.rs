//! `/v1/schemas`: put (a new version), get, list, and validate one event.

use actix_web::{web, HttpResponse};
use proto::config::{schema_key, ConfigRecord, EventSchemaRecord, EventSchemaSpec, PropertySpec};
use proto::reason::Reason;
use proto::schema::{check_definition, validate_event};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{parse_json, parse_json_value, AdminError};
use crate::AppState;

/// The body of a PUT: the event type comes from the path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SchemaBody {
    #[serde(default)]
    properties: Vec<PropertySpec>,
    #[serde(default)]
    source_required: bool,
    #[serde(default)]
    target_required: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaView<'a> {
    version: u32,
    #[serde(flatten)]
    schema: &'a EventSchemaSpec,
}

impl<'a> From<&'a EventSchemaRecord> for SchemaView<'a> {
    fn from(record: &'a EventSchemaRecord) -> Self {
        Self {
            version: record.version,
            schema: &record.schema,
        }
    }
}

pub async fn put(
    state: web::Data<AppState>,
    event_type: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let body: SchemaBody = parse_json(&body).map_err(|error| match error {
        // A property type outside the seven is a schema problem, not a JSON one.
        AdminError::InvalidJson(message) if message.contains("unknown variant") => {
            AdminError::InvalidSchema(message)
        }
        other => other,
    })?;
    let schema = EventSchemaSpec {
        event_type: event_type.into_inner(),
        properties: body.properties,
        source_required: body.source_required,
        target_required: body.target_required,
    };
    check_definition(&schema).map_err(AdminError::InvalidSchema)?;
    // Version N+1 only if it is still absent: two concurrent PUTs make two
    // versions, never one overwritten by the other.
    let (record, created) = state
        .config_log
        .update(|snapshot| {
            let latest = snapshot.latest_schema(&schema.event_type);
            if let Some(latest) = latest.filter(|l| l.schema == schema) {
                // Same definition again: idempotent, no new version.
                return Ok::<_, AdminError>((None, (latest.clone(), false)));
            }
            let record = EventSchemaRecord {
                version: latest.map_or(1, |l| l.version + 1),
                schema: schema.clone(),
            };
            let key = schema_key(&record.schema.event_type, record.version);
            let write = (key, ConfigRecord::EventSchema(record.clone()));
            Ok((Some(write), (record, true)))
        })
        .await?;
    let view = SchemaView::from(&record);
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let snapshot = state.config_log.snapshot();
    let latest: Vec<SchemaView<'_>> = snapshot
        .schemas
        .values()
        .filter_map(|versions| versions.values().next_back())
        .map(SchemaView::from)
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "schemas": latest }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    version: Option<u32>,
}

pub async fn get(
    state: web::Data<AppState>,
    event_type: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, AdminError> {
    let snapshot = state.config_log.snapshot();
    let record = match query.version {
        None => snapshot.latest_schema(&event_type),
        Some(version) => snapshot
            .schemas
            .get(event_type.as_str())
            .and_then(|v| v.get(&version)),
    };
    let record = record.ok_or_else(|| {
        let which = query
            .version
            .map(|v| format!(" version {v}"))
            .unwrap_or_default();
        AdminError::NotFound(format!("no event schema {:?}{which}", event_type.as_str()))
    })?;
    Ok(HttpResponse::Ok().json(SchemaView::from(record)))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Verdict {
    valid: bool,
    schema_version: Option<u32>,
    reasons: Vec<Reason>,
    properties: Option<Box<RawValue>>,
}

/// Checks one event the way the worker will: envelope first, then the latest
/// schema of the path's event type. The event's own `scope` stands in for the
/// client id (there is no producer request here).
pub async fn validate(
    state: web::Data<AppState>,
    event_type: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let event: Box<RawValue> = parse_json_value(&body)?;
    let scope_of_event = serde_json::from_str::<serde_json::Value>(event.get())
        .ok()
        .and_then(|v| {
            v.get("scope").map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| s.to_string())
            })
        })
        .unwrap_or_default();
    let snapshot = state.config_log.snapshot();
    let schema = snapshot.latest_schema(&event_type);
    let verdict = match proto::check_event(&event, &scope_of_event) {
        Err(reason) => Verdict {
            valid: false,
            schema_version: schema.map(|s| s.version),
            reasons: vec![reason],
            properties: None,
        },
        Ok(fields) => match validate_event(schema.map(|s| &s.schema), &fields) {
            Ok(validated) => Verdict {
                valid: true,
                schema_version: schema.map(|s| s.version),
                reasons: Vec::new(),
                properties: RawValue::from_string(validated.properties).ok(),
            },
            Err(reasons) => Verdict {
                valid: false,
                schema_version: schema.map(|s| s.version),
                reasons,
                properties: None,
            },
        },
    };
    Ok(HttpResponse::Ok().json(verdict))
}
