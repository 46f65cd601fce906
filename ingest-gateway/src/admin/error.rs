//! Admin API failures and their HTTP answers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::configlog::ConfigLogError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("send Authorization: Bearer <POWEHI_ADMIN_TOKEN>, or sign in at /console/")]
    Unauthorized,
    #[error("a console write must carry its session's CSRF token in X-CSRF-Token (GET /console/session answers it)")]
    CsrfMissing,
    #[error("the X-CSRF-Token header is not this session's CSRF token: reload the console")]
    CsrfInvalid,
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidSchema(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidCursor(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A replay matching more events than it may send.
    #[error("{0}")]
    TooManyEvents(String),
    #[error("the config log is not available: {0}")]
    ConfigUnavailable(#[from] ConfigLogError),
    #[error("the event log is not available: {0}")]
    EventLogUnavailable(String),
}

impl AdminError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::CsrfMissing => "csrf_token_missing",
            Self::CsrfInvalid => "csrf_token_invalid",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidSchema(_) => "invalid_schema",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidCursor(_) => "invalid_cursor",
            Self::NotFound(_) => "not_found",
            Self::TooManyEvents(_) => "too_many_events",
            Self::Conflict(_) | Self::ConfigUnavailable(ConfigLogError::Conflict(_)) => "conflict",
            Self::ConfigUnavailable(_) => "config_unavailable",
            Self::EventLogUnavailable(_) => "event_log_unavailable",
        }
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::CsrfMissing | Self::CsrfInvalid => StatusCode::FORBIDDEN,
            Self::InvalidJson(_)
            | Self::InvalidSchema(_)
            | Self::InvalidRequest(_)
            | Self::InvalidQuery(_)
            | Self::InvalidCursor(_)
            | Self::TooManyEvents(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::ConfigUnavailable(ConfigLogError::Conflict(_)) => {
                StatusCode::CONFLICT
            }
            Self::ConfigUnavailable(_) | Self::EventLogUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // Not an outage: the change lost its races.
            Self::ConfigUnavailable(conflict @ ConfigLogError::Conflict(_)) => conflict.to_string(),
            other => other.to_string(),
        };
        HttpResponse::build(self.status_code()).json(json!({
            "error": { "code": self.code(), "message": message }
        }))
    }
}

/// An optional ISO 8601 time of a filter (`from`, `to`) as epoch ms; `Err`
/// says which one is not a time, for the caller's error.
pub fn filter_time(name: &str, value: Option<&str>) -> Result<Option<u64>, String> {
    value
        .map(|text| {
            proto::time::parse_iso8601(text)
                .map(|t| t.timestamp_millis().max(0) as u64)
                .map_err(|_| format!("{name} {text:?} must be an ISO 8601 time"))
        })
        .transpose()
}

/// Reads a JSON object body into `T`, naming what is wrong (syntax, unknown
/// field, wrong type) in the answer. Every admin body is an object: an array
/// is refused here, because serde would read it as the struct's fields in
/// order (`[]` as a struct whose fields all have defaults).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(AdminError::InvalidJson(
            "request body: must be a JSON object, not an array".into(),
        ));
    }
    parse_json_value(body)
}

/// Reads any JSON body (an event to validate) into `T`, naming what is wrong.
pub fn parse_json_value<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path.is_empty() || path == "." {
            AdminError::InvalidJson(format!("request body: {inner}"))
        } else {
            AdminError::InvalidJson(format!("request body, at {path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| AdminError::InvalidJson(format!("request body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        max_events_per_second: Option<u32>,
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse_json::<Body>(br#"{"name":"x","maxEventsPerSecond":"fast"}"#).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("maxEventsPerSecond") && message.contains("expected u32"),
            "{message}"
        );
    }

    #[test]
    fn an_array_is_not_read_as_the_fields_in_order() {
        // Without the check, serde reads this as {"name":"x"} (and PUT
        // /v1/schemas/{type} with `[]` made an empty schema version).
        let message = parse_json::<Body>(br#" ["x", null]"#)
            .err()
            .map(|e| e.to_string());
        assert!(message
            .unwrap_or_default()
            .contains("must be a JSON object"));
        assert!(parse_json_value::<serde_json::Value>(b"[1]").is_ok());
    }

    #[test]
    fn trailing_garbage_and_unknown_fields_are_refused() {
        assert!(parse_json::<Body>(br#"{"name":"x"} junk"#).is_err());
        let message = parse_json::<Body>(br#"{"name":"x","nmae":1}"#)
            .err()
            .map(|e| e.to_string());
        assert!(message.unwrap_or_default().contains("unknown field `nmae`"));
    }
}
