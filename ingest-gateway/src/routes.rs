//! The route table of both listeners, declared once.
//!
//! Each listener's routes are listed by one function ([`public`], [`admin`],
//! [`admin_v1`]) that hands every route to a [`Routes`]: when serving, that is
//! actix's `ServiceConfig`, so the app is built from exactly this list; when
//! asked ([`Routes::listing`]), it only writes down method and path. The
//! OpenAPI documents are checked against the listing (see [`crate::openapi`]),
//! so a route cannot be added to a listener without being in its document, nor
//! the other way round.
//!
//! Adding a route: add one `routes.add(Method::…, "/path", web::to(handler))`
//! line here, and its operation to `ingest-gateway/openapi/public.json` or
//! `admin.json` (the unit tests in `openapi.rs` say what is missing). Path
//! parameters are named as in the document (`{eventType}`, not `{event_type}`).

use std::sync::Arc;

use actix_web::dev::ResourceDef;
use actix_web::http::header::ALLOW;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, Route};
use serde_json::json;

use crate::segment::{self, Call};
use crate::{admin, console, cors, ingest, openapi, tracker, AppState};

/// Where declared routes go.
pub enum Routes<'a> {
    /// Into the app being built.
    Serve(&'a mut web::ServiceConfig),
    /// Only their method and path, each path after `base` (a scope's path).
    List {
        base: &'static str,
        into: &'a mut Vec<(Method, String)>,
    },
}

impl Routes<'_> {
    /// Serves `route` for `method` requests to `path`.
    pub fn add(&mut self, method: Method, path: &str, route: Route) {
        match self {
            Routes::Serve(config) => {
                config.route(path, route.method(method));
            }
            Routes::List { base, into } => into.push((method, format!("{base}{path}"))),
        }
    }

    /// The routes `declare` adds under `base`, by method and path.
    pub fn listing(
        base: &'static str,
        declare: impl FnOnce(&mut Routes<'_>),
    ) -> Vec<(Method, String)> {
        let mut into = Vec::new();
        declare(&mut Routes::List {
            base,
            into: &mut into,
        });
        into
    }
}

/// A listener's answer to a request no route takes: `405 method_not_allowed`
/// with `Allow` when its path is served for other methods (RFC 9110), else
/// what `not_found` answers. Built from the listener's own route table.
pub fn unrouted(table: Vec<(Method, String)>, not_found: fn() -> HttpResponse) -> Route {
    let table: Arc<Vec<(ResourceDef, Method)>> = Arc::new(
        table
            .into_iter()
            .map(|(method, path)| (ResourceDef::new(path), method))
            .collect(),
    );
    web::to(move |request: HttpRequest| {
        // The path as the router matched it (percent-decoded as routing does).
        let path = request.match_info().as_str();
        let mut allowed: Vec<&str> = table
            .iter()
            .filter(|(pattern, _)| pattern.is_match(path))
            .map(|(_, method)| method.as_str())
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        let response = if allowed.is_empty() {
            not_found()
        } else {
            let allow = allowed.join(", ");
            HttpResponse::MethodNotAllowed()
                .insert_header((ALLOW, allow.clone()))
                .json(json!({"error": {
                    "code": "method_not_allowed",
                    "message": format!("{} {} is not served: this path takes {allow}", request.method(), request.path()),
                }}))
        };
        async move { response }
    })
}

/// What the public listener serves besides its routes' handlers.
#[derive(Clone)]
pub struct PublicOptions {
    /// `POWEHI_PATH_PREFIX`, normalized (`""` or `/name`).
    pub prefix: String,
    /// `POWEHI_PUBLIC_METRICS`.
    pub metrics: bool,
    /// The document `/openapi.json` answers.
    pub openapi: web::Bytes,
}

/// The public listener: health, metrics, its OpenAPI document, and the
/// ingest routes at the root and under the prefix.
pub fn public(routes: &mut Routes<'_>, options: &PublicOptions) {
    routes.add(Method::GET, "/healthz", web::to(crate::healthz));
    routes.add(Method::GET, "/readyz", web::to(crate::readyz));
    if options.metrics {
        routes.add(Method::GET, "/metrics", web::to(crate::metrics_text));
    }
    routes.add(
        Method::GET,
        "/openapi.json",
        openapi::serve(options.openapi.clone()),
    );
    let mut prefixes = vec![""];
    if !options.prefix.is_empty() {
        prefixes.push(&options.prefix);
    }
    for prefix in prefixes {
        routes.add(
            Method::POST,
            &format!("{prefix}/smile"),
            web::to(ingest::smile),
        );
        routes.add(
            Method::POST,
            &format!("{prefix}/context"),
            web::to(ingest::context),
        );
        // CORS preflights of the two routes browsers send to (crate::cors).
        for path in ["/smile", "/context"] {
            routes.add(
                Method::OPTIONS,
                &format!("{prefix}{path}"),
                web::to(cors::preflight),
            );
        }
        routes.add(
            Method::GET,
            &format!("{prefix}/powehi.js"),
            web::to(tracker::script),
        );
        // Segment's tracking API (crate::segment), one route per call.
        for call in Call::ALL {
            routes.add(
                Method::POST,
                &format!("{prefix}/v1/{}", call.name()),
                web::to(
                    move |request: HttpRequest,
                          payload: web::Payload,
                          state: web::Data<AppState>| {
                        segment::handle(call, request, payload, state)
                    },
                ),
            );
        }
    }
}

/// The admin listener outside `/v1`: metrics, its OpenAPI document (no
/// token: neither holds a secret), and the console (its page and files, and
/// the session it signs in with: [`console`]).
pub fn admin(routes: &mut Routes<'_>, openapi_document: &web::Bytes) {
    use Method as M;
    routes.add(M::GET, "/metrics", web::to(crate::metrics_text));
    routes.add(
        M::GET,
        "/openapi.json",
        openapi::serve(openapi_document.clone()),
    );
    routes.add(M::GET, "/", web::to(console::landing));
    routes.add(M::GET, "/console", web::to(console::redirect_to_console));
    routes.add(M::GET, "/console/", web::to(console::assets::index));
    routes.add(M::POST, "/console/session", web::to(console::sign_in));
    routes.add(M::GET, "/console/session", web::to(console::current));
    routes.add(M::DELETE, "/console/session", web::to(console::sign_out));
    routes.add(M::GET, "/console/{file}", web::to(console::assets::file));
}

/// The admin API under `/v1`, every route behind the bearer token
/// ([`admin::configure`] wraps them).
pub fn admin_v1(routes: &mut Routes<'_>) {
    use admin::{counts, datasources, erasures, events, profiles, replays, schemas};
    use Method as M;
    routes.add(M::POST, "/datasources", web::to(datasources::create));
    routes.add(M::GET, "/datasources", web::to(datasources::list));
    routes.add(M::GET, "/datasources/{id}", web::to(datasources::get));
    routes.add(
        M::POST,
        "/datasources/{id}/disable",
        web::to(datasources::disable),
    );
    routes.add(
        M::POST,
        "/datasources/{id}/enable",
        web::to(datasources::enable),
    );
    routes.add(
        M::POST,
        "/datasources/{id}/tokens",
        web::to(datasources::add_token),
    );
    routes.add(
        M::DELETE,
        "/datasources/{id}/tokens/{tokenId}",
        web::to(datasources::revoke_token),
    );
    routes.add(
        M::PUT,
        "/datasources/{id}/allowed-origins",
        web::to(datasources::set_allowed_origins),
    );
    routes.add(
        M::PUT,
        "/datasources/{id}/policy",
        web::to(datasources::set_policy),
    );
    routes.add(
        M::POST,
        "/datasources/{id}/identity-secret",
        web::to(datasources::rotate_identity_secret),
    );
    routes.add(M::GET, "/datasources/{id}/events", web::to(events::list));
    routes.add(
        M::GET,
        "/datasources/{id}/event-counts",
        web::to(counts::per_minute),
    );
    routes.add(
        M::POST,
        "/datasources/{id}/replays",
        web::to(replays::create),
    );
    routes.add(
        M::GET,
        "/datasources/{id}/replays/{jobId}",
        web::to(replays::get),
    );
    routes.add(M::GET, "/profiles/{profileId}", web::to(profiles::get));
    routes.add(
        M::POST,
        "/profiles/{profileId}/erasure",
        web::to(erasures::request),
    );
    routes.add(M::GET, "/erasures", web::to(erasures::list));
    routes.add(M::GET, "/erasures/{jobId}", web::to(erasures::get));
    routes.add(M::GET, "/schemas", web::to(schemas::list));
    routes.add(M::PUT, "/schemas/{eventType}", web::to(schemas::put));
    routes.add(M::GET, "/schemas/{eventType}", web::to(schemas::get));
    routes.add(
        M::POST,
        "/schemas/{eventType}/validate",
        web::to(schemas::validate),
    );
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::{test, App};

    use super::*;

    fn options() -> PublicOptions {
        PublicOptions {
            prefix: "/powehi".into(),
            metrics: true,
            openapi: web::Bytes::from_static(b"{}"),
        }
    }

    /// The public listener's routing as served, without its state: enough to see
    /// which handler or refusal a request reaches before any handler needs state.
    async fn public_app() -> impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    > {
        let options = options();
        let table = Routes::listing("", |r| public(r, &options));
        test::init_service(
            App::new()
                .configure(|config| public(&mut Routes::Serve(config), &options))
                .default_service(unrouted(table, crate::errors::not_found)),
        )
        .await
    }

    #[actix_web::test]
    async fn a_served_path_with_another_method_is_405_naming_the_methods_it_takes() {
        let app = public_app().await;
        for (method, path, allow) in [
            (Method::GET, "/powehi/smile", "OPTIONS, POST"),
            (Method::DELETE, "/v1/track", "POST"),
            (Method::POST, "/healthz", "GET"),
            (Method::PUT, "/openapi.json", "GET"),
        ] {
            let request = test::TestRequest::default()
                .method(method.clone())
                .uri(path)
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(
                response.headers().get(ALLOW).and_then(|v| v.to_str().ok()),
                Some(allow),
                "{method} {path}"
            );
            let body: serde_json::Value = test::read_body_json(response).await;
            assert_eq!(
                body["error"]["code"], "method_not_allowed",
                "{method} {path}"
            );
        }
    }

    #[actix_web::test]
    async fn an_unserved_path_is_still_404_and_an_unknown_segment_call_too() {
        let app = public_app().await;
        for path in ["/nowhere", "/v1/unknown-call", "/powehi/healthz"] {
            let request = test::TestRequest::get().uri(path).to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[actix_web::test]
    async fn options_without_origin_is_answered_with_allow_not_refused() {
        let app = public_app().await;
        for path in ["/smile", "/powehi/context"] {
            let request = test::TestRequest::default()
                .method(Method::OPTIONS)
                .uri(path)
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{path}");
            assert_eq!(
                response.headers().get(ALLOW).and_then(|v| v.to_str().ok()),
                Some("OPTIONS, POST")
            );
        }
    }

    #[actix_web::test]
    async fn the_openapi_document_is_served_as_json() {
        let app = public_app().await;
        let request = test::TestRequest::get().uri("/openapi.json").to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response
                .headers()
                .get(actix_web::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
}
