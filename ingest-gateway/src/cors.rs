//! CORS for the ingest routes, so pages on other origins can send events.
//!
//! A data source lists the origins whose pages may use its keys
//! (`allowedOrigins`: exact origins, or `*`, the default). A preflight
//! (`OPTIONS`) carries no credential headers, so it is granted when the source
//! named by `?clientId=` allows the origin, or without one when some source
//! does; the actual request is judged against its own source and, from an
//! origin that source does not allow, refused `403 origin_not_allowed` without
//! a grant (the browser then hides the answer from the page). Granted answers,
//! errors included, carry the origin, `Vary: Origin`, and expose `Retry-After`
//! so a tracker can honour a 429 or 503. Requests without `Origin` (servers,
//! SDKs) are not concerned.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ALLOW,
    ORIGIN, VARY,
};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpRequest, HttpResponse};

use crate::errors::ApiError;
use crate::ingest::QueryCredentials;
use crate::AppState;

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

const ALLOWED_HEADERS: &str = "X-Client-ID, X-Client-Access-Token, Content-Type, Content-Encoding";

/// The ingest routes: CORS applies to them only.
fn is_ingest_path(path: &str) -> bool {
    path.ends_with("/smile") || path.ends_with("/context")
}

pub async fn cors(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin.filter(|_| is_ingest_path(request.path())) else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    if request.method() == Method::OPTIONS {
        // Answered by the route's own handler, [`preflight`].
        return Ok(next.call(request).await?.map_into_boxed_body());
    }
    let mut response = next.call(request).await?.map_into_boxed_body();
    let refused = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .is_some_and(|e| matches!(e, ApiError::OriginNotAllowed { .. }));
    if !refused {
        grant(response.headers_mut(), &origin);
        response.headers_mut().insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
    Ok(response)
}

/// `OPTIONS` of an ingest route. With `Origin` it is a CORS preflight:
/// granted (204 with the methods, headers and max age) when the source named
/// by `?clientId=` allows the origin, or without one when some source does;
/// else `403 origin_not_allowed`, with no grant. Without `Origin` it is a
/// plain OPTIONS request: 204 with `Allow` (RFC 9110).
pub async fn preflight(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return Ok(HttpResponse::NoContent()
            .insert_header((ALLOW, "OPTIONS, POST"))
            .finish());
    };
    let origin = origin.to_str().unwrap_or("(not ASCII)");
    let client_id = QueryCredentials::from_query(request.query_string()).and_then(|q| q.client_id);
    let granted = request
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.registry.grants_origin(client_id.as_deref(), origin));
    if !granted {
        return Err(ApiError::OriginNotAllowed {
            origin: origin.to_string(),
            source_id: client_id.unwrap_or_else(|| "(any)".into()),
        });
    }
    let mut response = HttpResponse::NoContent().finish();
    let headers = response.headers_mut();
    grant(headers, origin);
    let set = |headers: &mut actix_web::http::header::HeaderMap, name: HeaderName, value| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, ACCESS_CONTROL_ALLOW_METHODS, "POST");
    set(headers, ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS);
    set(headers, ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_SECS);
    Ok(response)
}

fn grant(headers: &mut actix_web::http::header::HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(VARY, HeaderValue::from_static("Origin"));
}
