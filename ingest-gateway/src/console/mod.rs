//! The console: a web UI for data sources, event schemas, the event log and
//! profiles, served by the admin listener at `/console/` (see README,
//! "Console").
//!
//! - [`assets`]: the page's files, compiled into the binary.
//! - [`session`]: signing in with the admin token (a cookie) and the CSRF
//!   token every console write carries; [`crate::admin`]'s gate accepts
//!   either that session or the bearer token.
//!
//! The page itself only calls the admin API under `/v1`; this module adds no
//! data route of its own.

pub(crate) mod assets;
pub mod session;

use actix_web::http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::json;

pub use session::Sessions;

use crate::admin::{parse_json, AdminError};
use crate::AppState;

/// Largest sign-in body: a token, not a document.
const MAX_SIGN_IN_BODY: usize = 4096;

/// `GET /console`: the console lives at `/console/` (its files are relative).
pub(crate) async fn redirect_to_console() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((LOCATION, "/console/"))
        .finish()
}

/// `GET /`: what this listener serves, linking to the console.
pub(crate) async fn landing() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Powehi admin</title></head>\
             <body style=\"font-family:system-ui,sans-serif;margin:3rem\"><h1>Powehi admin</h1>\
             <p><a href=\"/console/\">Open the console</a> (data sources, event schemas, event logs, profiles).</p>\
             <p>The JSON admin API is under <code>/v1</code> (<code>Authorization: Bearer</code>); \
             Prometheus metrics at <a href=\"/metrics\">/metrics</a>.</p></body></html>",
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

fn session_cookie(request: &HttpRequest) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie_value(h, session::COOKIE))
        .map(str::to_string)
}

/// `POST /console/session {"token"}`: the admin token for a session cookie;
/// answers the CSRF token the page sends with its writes.
pub(crate) async fn sign_in(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    if body.len() > MAX_SIGN_IN_BODY {
        return HttpResponse::PayloadTooLarge().json(json!({"error": {
            "code": "payload_too_large",
            "message": format!("a sign-in body is at most {MAX_SIGN_IN_BODY} bytes: {{\"token\": \"…\"}}"),
        }}));
    }
    let request: SignIn = match parse_json(&body) {
        Ok(request) => request,
        Err(error) => return error.error_response(),
    };
    match state
        .console_sessions
        .sign_in(request.token.trim(), &state.admin_token_hash)
    {
        None => AdminError::Unauthorized.error_response(),
        Some(new) => HttpResponse::Created()
            .insert_header((SET_COOKIE, session::set_cookie(&new.cookie_value)))
            .json(json!({
                "csrfToken": new.csrf_token,
                "expiresInSeconds": session::SESSION_LIFETIME.as_secs(),
                "ingest": ingest_hint(&state),
            })),
    }
}

/// `GET /console/session`: the CSRF token of the cookie's session (the page
/// keeps it in memory only), or 401. Only this origin's pages can read it: the
/// admin listener grants no CORS.
pub(crate) async fn current(state: web::Data<AppState>, request: HttpRequest) -> HttpResponse {
    match session_cookie(&request).and_then(|c| state.console_sessions.csrf_token(&c)) {
        Some(csrf_token) => HttpResponse::Ok().json(json!({
            "csrfToken": csrf_token,
            "ingest": ingest_hint(&state),
        })),
        None => AdminError::Unauthorized.error_response(),
    }
}

/// Where producers send, as far as this gateway knows: its public port and
/// path prefix. The page puts its own host name in front (the public and the
/// admin listener usually share a host); behind a proxy the curl it shows is
/// a starting point to edit.
fn ingest_hint(state: &AppState) -> serde_json::Value {
    json!({
        "port": state.config.http_addr.port(),
        "pathPrefix": state.config.normalized_prefix(),
    })
}

/// `DELETE /console/session`: signs out (a write: the CSRF token is required).
pub(crate) async fn sign_out(state: web::Data<AppState>, request: HttpRequest) -> HttpResponse {
    let cookie = session_cookie(&request);
    let csrf = request
        .headers()
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(refusal) = state.console_sessions.admit(cookie.as_deref(), true, csrf) {
        return crate::admin::refusal_error(refusal).error_response();
    }
    if let Some(cookie) = cookie {
        state.console_sessions.sign_out(&cookie);
    }
    HttpResponse::NoContent()
        .insert_header((SET_COOKIE, session::clear_cookie()))
        .finish()
}
