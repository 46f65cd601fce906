//! Every answer in one JSON shape, `{"error": {"code", "message"}}`, also when
//! actix itself refuses a request before a handler runs: a query string that
//! does not parse (a repeated `?sessionId=`, `?version=abc`), a body over an
//! extractor's limit, a path parameter of the wrong type. Those come back from
//! actix as plain text; this middleware, on both listeners, rewrites them.
//! It also refuses protocol upgrades (`Upgrade: websocket`, `h2c`): nothing
//! here speaks them, and actix hands such a request's handler the rest of the
//! connection as its body, which never ends, so the request was never
//! answered.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE, UPGRADE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};
use serde_json::json;

/// Longest message kept from actix's own text.
const MESSAGE_CHARS: usize = 300;

/// Rewrites an error answer that is not JSON into the JSON shape.
pub async fn json_errors(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if request.headers().contains_key(UPGRADE) {
        let refusal = HttpResponse::BadRequest().json(json!({
            "error": {
                "code": "upgrade_not_supported",
                "message": "protocol upgrades are not supported: send plain HTTP/1.1 requests",
            }
        }));
        return Ok(request.into_response(refusal));
    }
    let response = next.call(request).await?.map_into_boxed_body();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = response.status();
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return Ok(response);
    }
    let (code, message) = match response.response().error() {
        Some(error) => (code_of(error, status), error.to_string()),
        None => (
            code_of_status(status),
            status.canonical_reason().unwrap_or("").to_string(),
        ),
    };
    let message: String = message.chars().take(MESSAGE_CHARS).collect();
    let retry_after: Option<HeaderValue> = response
        .headers()
        .get(actix_web::http::header::RETRY_AFTER)
        .cloned();
    let (request, _) = response.into_parts();
    let mut rewritten = HttpResponse::build(status).json(json!({
        "error": { "code": code, "message": message }
    }));
    if let Some(value) = retry_after {
        rewritten
            .headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, value);
    }
    Ok(ServiceResponse::new(request, rewritten))
}

fn code_of(error: &Error, status: StatusCode) -> &'static str {
    if error.as_error::<QueryPayloadError>().is_some() {
        return "invalid_query";
    }
    if error.as_error::<PathError>().is_some() {
        return "invalid_path";
    }
    if let Some(error) = error.as_error::<JsonPayloadError>() {
        return match error {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                "payload_too_large"
            }
            _ => "invalid_json",
        };
    }
    if let Some(PayloadError::Overflow) = error.as_error::<PayloadError>() {
        return "payload_too_large";
    }
    code_of_status(status)
}

fn code_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    }
}
