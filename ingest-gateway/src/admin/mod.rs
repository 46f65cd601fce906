//! The admin API (`POWEHI_ADMIN_ADDR`): data sources, event schemas, the event
//! log, replays of rejected events and profiles, JSON under `/v1`, every route behind `Authorization: Bearer`.
//!
//! Writes go to the config log and answer once this gateway has applied them
//! (see [`crate::configlog`]); reads answer from the applied snapshot.

mod datasources;
mod error;
mod events;
mod profiles;
mod replays;
mod schemas;

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

/// The routes of the admin listener.
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/v1")
            .wrap(from_fn(require_token))
            .app_data(web::PayloadConfig::new(MAX_ADMIN_BODY))
            .route("/datasources", web::post().to(datasources::create))
            .route("/datasources", web::get().to(datasources::list))
            .route("/datasources/{id}", web::get().to(datasources::get))
            .route(
                "/datasources/{id}/disable",
                web::post().to(datasources::disable),
            )
            .route(
                "/datasources/{id}/enable",
                web::post().to(datasources::enable),
            )
            .route(
                "/datasources/{id}/tokens",
                web::post().to(datasources::add_token),
            )
            .route(
                "/datasources/{id}/tokens/{token_id}",
                web::delete().to(datasources::revoke_token),
            )
            .route(
                "/datasources/{id}/allowed-origins",
                web::put().to(datasources::set_allowed_origins),
            )
            .route(
                "/datasources/{id}/identity-secret",
                web::post().to(datasources::rotate_identity_secret),
            )
            .route("/datasources/{id}/events", web::get().to(events::list))
            .route("/datasources/{id}/replays", web::post().to(replays::create))
            .route(
                "/datasources/{id}/replays/{job}",
                web::get().to(replays::get),
            )
            .route("/profiles/{profile_id}", web::get().to(profiles::get))
            .route("/schemas", web::get().to(schemas::list))
            .route("/schemas/{event_type}", web::put().to(schemas::put))
            .route("/schemas/{event_type}", web::get().to(schemas::get))
            .route(
                "/schemas/{event_type}/validate",
                web::post().to(schemas::validate),
            )
            .default_service(web::to(|| async {
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
pub async fn not_found() -> HttpResponse {
    AdminError::NotFound("no such admin endpoint: the API lives under /v1".into()).error_response()
}
