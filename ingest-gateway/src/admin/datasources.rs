//! `/v1/datasources`: create, list, get, disable/enable, add and revoke tokens.
//!
//! A write key is 256 bits of randomness (two v4 UUIDs, from the OS generator),
//! returned once at creation and kept only as its SHA-256 hash.

use actix_web::{web, HttpResponse};
use proto::config::{
    any_origin, check_origin, data_source_key, ConfigRecord, DataSourceRecord, TokenRecord,
    UndeclaredProperties, UnplannedEvents,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{parse_json, AdminError};
use crate::auth::{hash_key, key_hash_text};
use crate::bootstrap::check_data_source_id;
use crate::AppState;

const MAX_DISPLAY_NAME: usize = proto::schema::MAX_NAME_LEN;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateDataSource {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    max_events_per_second: Option<u32>,
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    unplanned_events: UnplannedEvents,
    #[serde(default)]
    undeclared_properties: UndeclaredProperties,
}

/// `PUT …/policy`: a field left out keeps its value.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyChange {
    #[serde(default)]
    unplanned_events: Option<UnplannedEvents>,
    #[serde(default)]
    undeclared_properties: Option<UndeclaredProperties>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AllowedOrigins {
    allowed_origins: Vec<String>,
}

fn checked_origins(origins: Vec<String>) -> Result<Vec<String>, AdminError> {
    if origins.is_empty() || origins.len() > 100 {
        return Err(AdminError::InvalidRequest(
            "allowedOrigins must list 1 to 100 origins (\"*\" for any)".into(),
        ));
    }
    for origin in &origins {
        check_origin(origin).map_err(AdminError::InvalidRequest)?;
    }
    Ok(origins)
}

/// A data source as the API shows it: never a key, never a hash.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceView {
    id: String,
    name: String,
    enabled: bool,
    max_events_per_second: Option<u32>,
    tokens: Vec<TokenView>,
    allowed_origins: Vec<String>,
    unplanned_events: UnplannedEvents,
    undeclared_properties: UndeclaredProperties,
    /// An identity secret is set: `/context` can prove identified profiles.
    identity_verification: bool,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
}

impl From<&DataSourceRecord> for DataSourceView {
    fn from(record: &DataSourceRecord) -> Self {
        Self {
            id: record.id.clone(),
            name: record.name.clone(),
            enabled: record.enabled,
            max_events_per_second: record.max_events_per_second,
            identity_verification: record.identity_secret.is_some(),
            allowed_origins: record.allowed_origins.clone(),
            unplanned_events: record.unplanned_events,
            undeclared_properties: record.undeclared_properties,
            tokens: record
                .tokens
                .iter()
                .map(|t| TokenView { id: t.id.clone() })
                .collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewToken {
    token_id: String,
    write_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(flatten)]
    source: DataSourceView,
    #[serde(flatten)]
    token: NewToken,
}

fn new_token() -> (TokenRecord, NewToken) {
    let write_key = format!("pk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let id = format!("tok_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let record = TokenRecord {
        id: id.clone(),
        hash: key_hash_text(&hash_key(&write_key)),
    };
    (
        record,
        NewToken {
            token_id: id,
            write_key,
        },
    )
}

pub async fn create(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let request: CreateDataSource = parse_json(&body)?;
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_DISPLAY_NAME {
        return Err(AdminError::InvalidRequest(format!(
            "name must be 1 to {MAX_DISPLAY_NAME} characters"
        )));
    }
    let id = match request.id {
        Some(id) => {
            check_data_source_id(&id).map_err(AdminError::InvalidRequest)?;
            id
        }
        None => format!("ds_{}", &Uuid::new_v4().simple().to_string()[..16]),
    };
    let (token, shown) = new_token();
    let record = DataSourceRecord {
        id,
        name,
        enabled: true,
        tokens: vec![token],
        max_events_per_second: request.max_events_per_second,
        identity_secret: None,
        allowed_origins: match request.allowed_origins {
            Some(origins) => checked_origins(origins)?,
            None => any_origin(),
        },
        unplanned_events: request.unplanned_events,
        undeclared_properties: request.undeclared_properties,
    };
    // Only if absent: of two creates of one id, one gets 409.
    let record = change(&state, &record.id.clone(), |current| match current {
        Some(_) => Err(AdminError::Conflict(format!(
            "data source {:?} already exists",
            record.id
        ))),
        None => Ok(Some(record.clone())),
    })
    .await?;
    Ok(HttpResponse::Created().json(Created {
        source: DataSourceView::from(&record),
        token: shown,
    }))
}

pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let snapshot = state.config_log.snapshot();
    let sources: Vec<DataSourceView> = snapshot
        .data_sources
        .values()
        .map(DataSourceView::from)
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "dataSources": sources }))
}

pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let record = existing(&state, &id)?;
    Ok(HttpResponse::Ok().json(DataSourceView::from(&record)))
}

pub async fn disable(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    set_enabled(state, &id, false).await
}

pub async fn enable(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    set_enabled(state, &id, true).await
}

async fn set_enabled(
    state: web::Data<AppState>,
    id: &str,
    enabled: bool,
) -> Result<HttpResponse, AdminError> {
    let record = change(&state, id, |current| {
        let mut record = found(current, id)?;
        if record.enabled == enabled {
            return Ok(None);
        }
        record.enabled = enabled;
        Ok(Some(record))
    })
    .await?;
    Ok(HttpResponse::Ok().json(DataSourceView::from(&record)))
}

pub async fn add_token(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let (token, shown) = new_token();
    change(&state, &id, |current| {
        let mut record = found(current, &id)?;
        record.tokens.push(token.clone());
        Ok(Some(record))
    })
    .await?;
    Ok(HttpResponse::Created().json(shown))
}

pub async fn revoke_token(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (id, token_id) = path.into_inner();
    let record = change(&state, &id, |current| {
        let mut record = found(current, &id)?;
        let before = record.tokens.len();
        record.tokens.retain(|t| t.id != token_id);
        if record.tokens.len() == before {
            return Err(AdminError::NotFound(format!(
                "data source {id:?} has no token {token_id:?}"
            )));
        }
        Ok(Some(record))
    })
    .await?;
    Ok(HttpResponse::Ok().json(DataSourceView::from(&record)))
}

/// Replaces the origins whose pages may send with this source's keys.
pub async fn set_allowed_origins(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let request: AllowedOrigins = parse_json(&body)?;
    let origins = checked_origins(request.allowed_origins)?;
    let record = change(&state, &id, |current| {
        let mut record = found(current, &id)?;
        if record.allowed_origins == origins {
            return Ok(None);
        }
        record.allowed_origins = origins.clone();
        Ok(Some(record))
    })
    .await?;
    Ok(HttpResponse::Ok().json(DataSourceView::from(&record)))
}

/// Sets what happens to the source's unplanned event types and undeclared
/// properties from the next request on (records carry the policy they were
/// accepted under, so events already sent keep theirs).
pub async fn set_policy(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let request: PolicyChange = parse_json(&body)?;
    if request.unplanned_events.is_none() && request.undeclared_properties.is_none() {
        return Err(AdminError::InvalidRequest(
            "give unplannedEvents (\"reject\" or \"accept\") and/or undeclaredProperties \
             (\"trim\" or \"keep\")"
                .into(),
        ));
    }
    let record = change(&state, &id, |current| {
        let mut record = found(current, &id)?;
        let before = record.policy();
        if let Some(unplanned) = request.unplanned_events {
            record.unplanned_events = unplanned;
        }
        if let Some(undeclared) = request.undeclared_properties {
            record.undeclared_properties = undeclared;
        }
        Ok((record.policy() != before).then_some(record))
    })
    .await?;
    Ok(HttpResponse::Ok().json(DataSourceView::from(&record)))
}

/// Sets a new identity secret (the old one stops verifying at once) and
/// shows it once: the site's server signs profile ids with it (see
/// [`crate::identity`]).
pub async fn rotate_identity_secret(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let secret = format!("is_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    change(&state, &id, |current| {
        let mut record = found(current, &id)?;
        record.identity_secret = Some(secret.clone());
        Ok(Some(record))
    })
    .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "identitySecret": secret })))
}

pub fn existing(state: &AppState, id: &str) -> Result<DataSourceRecord, AdminError> {
    state
        .config_log
        .snapshot()
        .data_sources
        .get(id)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no data source {id:?}")))
}

fn found(current: Option<&DataSourceRecord>, id: &str) -> Result<DataSourceRecord, AdminError> {
    current
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no data source {id:?}")))
}

/// Changes data source `id` to what `plan` makes of its current record
/// (`None`: leave it), without losing a concurrent change (see
/// [`crate::configlog`]); answers the record as it then is.
async fn change(
    state: &AppState,
    id: &str,
    mut plan: impl FnMut(Option<&DataSourceRecord>) -> Result<Option<DataSourceRecord>, AdminError>,
) -> Result<DataSourceRecord, AdminError> {
    state
        .config_log
        .update(|snapshot| {
            let current = snapshot.data_sources.get(id);
            Ok(match plan(current)? {
                Some(record) => (
                    Some((
                        data_source_key(id),
                        ConfigRecord::DataSource(record.clone()),
                    )),
                    record,
                ),
                None => (None, found(current, id)?),
            })
        })
        .await
}
