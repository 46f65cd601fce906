//! The admin API (`POWEHI_ADMIN_ADDR`): data sources, event schemas, the event
//! log, replays of rejected events, profiles and erasures, JSON under `/v1`,
//! every route behind `Authorization: Bearer` or a console session (a cookie,
//! plus its CSRF token on writes: see [`crate::console::session`]).
//!
//! Writes go to the config log and answer once this gateway has applied them
//! (see [`crate::configlog`]); reads answer from the applied snapshot.

pub(crate) mod counts;
pub(crate) mod datasources;
pub(crate) mod erasures;
mod error;
pub(crate) mod events;
pub(crate) mod profiles;
pub(crate) mod replays;
pub(crate) mod schemas;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, COOKIE};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, ResponseError};
use subtle::ConstantTimeEq;

pub use error::{filter_time, parse_json, AdminError};

use crate::auth::hash_key;
use crate::console::session::{self, SessionRefusal};
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
pub fn not_found() -> HttpResponse {
    AdminError::NotFound("no such admin endpoint: the API lives under /v1".into()).error_response()
}
