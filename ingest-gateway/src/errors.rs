//! Every way a request can fail, and the one place that maps it to an HTTP answer.
//!
//! Client mistakes are 4xx with a stable `code` and a message saying what to fix;
//! a Kafka that cannot take the events, or a gateway still starting, is 503 with
//! Retry-After, so well-behaved producers back off and retry (never a final 4xx
//! for a valid request); nothing of a failed request is acknowledged.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::json;

/// A refused event in a batch: its position and why.
#[derive(Debug, Clone, Serialize)]
pub struct EventError {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Before the config log is replayed and the bootstrap applied, valid keys
    /// would look unknown: credentials are not judged at all until then.
    #[error("the gateway is starting ({0}); nothing was acknowledged, retry shortly")]
    NotReady(&'static str),
    #[error("Content-Type {0:?} is not accepted: send application/json (or text/plain, as navigator.sendBeacon does)")]
    UnsupportedMediaType(String),
    #[error("Content-Encoding {0:?} is not supported: send gzip, deflate or an uncompressed body")]
    UnsupportedEncoding(String),
    #[error("{0}")]
    MalformedEncoding(String),
    #[error("send both X-Client-ID and X-Client-Access-Token headers (or ?clientId=&writeKey=)")]
    MissingCredentials,
    #[error("unknown X-Client-ID or wrong X-Client-Access-Token")]
    InvalidCredentials,
    #[error(
        "pages of origin {origin:?} may not send to data source {source_id:?} (its allowedOrigins)"
    )]
    OriginNotAllowed { origin: String, source_id: String },
    #[error("data source {0:?} is disabled")]
    DataSourceDisabled(String),
    #[error("the request body is larger than {limit} bytes: send smaller batches")]
    PayloadTooLarge { limit: usize },
    /// Segment's API: a batch over its documented size, answered as Segment
    /// does (400, which its libraries do not retry).
    #[error(
        "the batch is larger than {limit} bytes, Segment's limit per request: send smaller batches"
    )]
    BatchTooLarge { limit: usize },
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body must be an object with an \"events\" array: {0}")]
    InvalidBody(String),
    #[error("the \"events\" array is empty: send at least one event")]
    EmptyBatch,
    #[error("the request has {count} events, over the limit of {limit} per request: send smaller batches")]
    TooManyEvents { count: usize, limit: usize },
    #[error("data source {source_id:?} is over its rate of {per_second} {what} per second")]
    RateLimited {
        source_id: String,
        per_second: u32,
        /// What is counted: events, or profile reads of /context.
        what: &'static str,
        retry_after_secs: u64,
    },
    #[error("Kafka did not acknowledge the events ({0}); nothing was acknowledged, retry later")]
    KafkaUnavailable(String),
    #[error("none of the {count} events was accepted: see errors")]
    AllEventsRefused {
        count: usize,
        errors: Vec<EventError>,
        /// Refused events not recorded in the event log (over the budget).
        unrecorded: usize,
    },
    #[error("reading the request failed: {0}")]
    BadRequestStream(String),
    #[error("the request body did not arrive within {0:?}: send it at once")]
    BodyTimeout(std::time::Duration),
    #[error("the gateway is at capacity ({0}); nothing was acknowledged, retry shortly")]
    Overloaded(&'static str),

    #[error("the events were acknowledged, but the profile cannot be read now ({0}); retry without events")]
    ProfileUnavailable(String),
    /// `/context` of a suppressed profile or of a session merged into one
    /// (see `crate::erasure`); the message does not say which.
    #[error("no profile can be answered for this session")]
    ProfileNotFound,
}

/// Seconds a producer should wait after a 503 before retrying.
const KAFKA_RETRY_AFTER_SECS: u64 = 5;

/// A starting gateway is usually ready within a fraction of a second.
const NOT_READY_RETRY_AFTER_SECS: u64 = 1;

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotReady(_) => "not_ready",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::MalformedEncoding(_) => "malformed_encoding",
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidCredentials => "invalid_credentials",
            Self::DataSourceDisabled(_) => "data_source_disabled",
            Self::OriginNotAllowed { .. } => "origin_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::EmptyBatch => "empty_batch",
            Self::TooManyEvents { .. } => "too_many_events",
            Self::RateLimited { .. } => "rate_limited",
            Self::KafkaUnavailable(_) => "kafka_unavailable",
            Self::AllEventsRefused { .. } => "all_events_refused",
            Self::BadRequestStream(_) => "bad_request_stream",
            Self::BodyTimeout(_) => "body_timeout",
            Self::Overloaded(_) => "overloaded",

            Self::ProfileUnavailable(_) => "profile_unavailable",
            Self::ProfileNotFound => "profile_not_found",
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::NotReady(_) | Self::Overloaded(_) => Some(NOT_READY_RETRY_AFTER_SECS),
            Self::KafkaUnavailable(_) | Self::ProfileUnavailable(_) => Some(KAFKA_RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::MissingCredentials | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::DataSourceDisabled(_) | Self::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } | Self::TooManyEvents { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::MalformedJson(_)
            | Self::MalformedEncoding(_)
            | Self::InvalidBody(_)
            | Self::EmptyBatch
            | Self::BatchTooLarge { .. }
            | Self::AllEventsRefused { .. }
            | Self::BadRequestStream(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ProfileNotFound => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady(_)
            | Self::KafkaUnavailable(_)
            | Self::ProfileUnavailable(_)
            | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let error = json!({ "code": self.code(), "message": self.to_string() });
        let body = match self {
            Self::AllEventsRefused {
                errors, unrecorded, ..
            } => {
                let mut body =
                    json!({ "error": error, "updated": 0, "accepted": 0, "errors": errors });
                if *unrecorded > 0 {
                    body["unrecorded"] = json!(unrecorded);
                }
                body
            }
            _ => json!({ "error": error }),
        };
        let mut response = HttpResponse::build(self.status_code()).json(body);
        if let Some(seconds) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// JSON 404 for paths the gateway does not serve, so every answer has one shape.
pub fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": { "code": "not_found", "message": "no such endpoint: POST events to /smile" }
    }))
}
