//! The admin API (`POWEHI_ADMIN_ADDR`): data sources, event schemas, the event
//! log and profiles, JSON under `/v1`, every route behind `Authorization: Bearer`
//! or a console session (a cookie, plus its CSRF token on writes: see
//! [`crate::console::session`]).
//!
//! Writes go to the config log and answer once this gateway has applied them
//! (see [`crate::configlog`]); reads answer from the applied snapshot.

mod counts;
mod datasources;
mod erasures;
mod error;
mod events;
mod profiles;
mod schemas;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, COOKIE};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, ResponseError};
use subtle::ConstantTimeEq;

pub use error::{parse_json, AdminError};

use crate::auth::hash_key;
use crate::console::session::{self, SessionRefusal};
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
                "/datasources/{id}/policy",
                web::put().to(datasources::set_policy),
            )
            .route(
                "/datasources/{id}/identity-secret",
                web::post().to(datasources::rotate_identity_secret),
            )
            .route("/datasources/{id}/events", web::get().to(events::list))
            .route(
                "/datasources/{id}/event-counts",
                web::get().to(counts::per_minute),
            )
            .route("/profiles/{profile_id}", web::get().to(profiles::get))
            .route(
                "/profiles/{profile_id}/erasure",
                web::post().to(erasures::request),
            )
            .route("/erasures", web::get().to(erasures::list))
            .route("/erasures/{job_id}", web::get().to(erasures::get))
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

/// The error a refused console request answers.
pub fn refusal_error(refusal: SessionRefusal) -> AdminError {
    match refusal {
        SessionRefusal::NotSignedIn => AdminError::Unauthorized,
        SessionRefusal::CsrfMissing => AdminError::CsrfMissing,
        SessionRefusal::CsrfWrong => AdminError::CsrfInvalid,
    }
}

/// Admits a request by its bearer token (compared in constant time, hashes of
/// equal length), else by its console session (a write also by the session's
/// CSRF token, see [`crate::console::session`]); counts every admin request
/// by route and status.
async fn require_token(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(hash_key);
    let admitted = match (&state, bearer) {
        (Some(state), Some(presented)) => {
            if bool::from(state.admin_token_hash.ct_eq(&presented)) {
                Ok(())
            } else {
                Err(AdminError::Unauthorized)
            }
        }
        (Some(state), None) => {
            let headers = request.headers();
            let cookie = headers
                .get_all(COOKIE)
                .filter_map(|v| v.to_str().ok())
                .find_map(|h| session::cookie_value(h, session::COOKIE));
            let csrf = headers
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            let write = !matches!(*request.method(), Method::GET | Method::HEAD);
            state
                .console_sessions
                .admit(cookie, write, csrf)
                .map_err(refusal_error)
        }
        (None, _) => Err(AdminError::Unauthorized),
    };
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let response = match admitted {
        Ok(()) => next.call(request).await?.map_into_boxed_body(),
        Err(refusal) => {
            let (http_request, _) = request.into_parts();
            ServiceResponse::new(http_request, refusal.error_response())
        }
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
