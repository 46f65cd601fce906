//! The admin API (`POWEHI_ADMIN_ADDR`): data sources, event schemas, the event
//! log and profiles, JSON under `/v1`, every route behind `Authorization: Bearer`.
//!
//! Writes go to the config log and answer once this gateway has applied them
//! (see [`crate::configlog`]); reads answer from the applied snapshot.

pub(crate) mod datasources;
mod error;
pub(crate) mod events;
pub(crate) mod profiles;
pub(crate) mod schemas;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, ResponseError};
use subtle::ConstantTimeEq;

pub use error::AdminError;

use crate::auth::hash_key;
use crate::AppState;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 256 * 1024;

/// The admin API under `/v1` (its routes: [`crate::routes::admin_v1`]),
/// behind the bearer token.
/// `table` is the listener's route table: a `/v1` path served for other
/// methods is a 405 (see [`crate::routes::unrouted`]).
pub fn configure(config: &mut web::ServiceConfig, table: Vec<(actix_web::http::Method, String)>) {
    config.service(
        web::scope("/v1")
            .wrap(from_fn(require_token))
            .app_data(web::PayloadConfig::new(MAX_ADMIN_BODY))
            .configure(|config| crate::routes::admin_v1(&mut crate::routes::Routes::Serve(config)))
            .default_service(crate::routes::unrouted(table, || {
                AdminError::NotFound("no such admin endpoint (see README: Admin API)".into())
                    .error_response()
            })),
    );
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares the bearer token in constant time (hashes of equal length), and
/// counts every admin request by route and status.
async fn require_token(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(hash_key);
    let authorized = match (&state, presented) {
        (Some(state), Some(presented)) => bool::from(state.admin_token_hash.ct_eq(&presented)),
        _ => false,
    };
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let response = if authorized {
        next.call(request).await?.map_into_boxed_body()
    } else {
        let (http_request, _) = request.into_parts();
        ServiceResponse::new(http_request, AdminError::Unauthorized.error_response())
    };
    if let Some(state) = state {
        state
            .metrics
            .admin_requests
            .with_label_values(&[route.as_str(), response.status().as_str()])
            .inc();
    }
    Ok(response)
}

/// JSON 404 outside `/v1` too.
pub fn not_found() -> HttpResponse {
    AdminError::NotFound("no such admin endpoint: the API lives under /v1".into()).error_response()
}
