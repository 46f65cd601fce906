//! The OpenAPI 3.1 documents of both listeners, served at `/openapi.json`.
//!
//! Hand-written in `ingest-gateway/openapi/` (`public.json`, `admin.json`) and
//! compiled into the binary. The public document is written for the default
//! prefix, `/powehi`: its paths under `/powehi/` are the prefixed copies of the
//! ingest routes, and the served document moves them under the configured
//! `POWEHI_PATH_PREFIX` (or leaves them out when it is empty), and leaves out
//! `/metrics` when `POWEHI_PUBLIC_METRICS=false`, so it lists what that
//! gateway serves. The tests below hold each document to its listener's route
//! table ([`crate::routes`]): a route missing from a document, or a path in a
//! document that no route serves, fails them.

use actix_web::{web, HttpResponse, Route};
use anyhow::Context;
use serde_json::{Map, Value};

pub const PUBLIC_SOURCE: &str = include_str!("../openapi/public.json");
pub const ADMIN_SOURCE: &str = include_str!("../openapi/admin.json");

/// The prefix `public.json` is written for.
pub const DOCUMENTED_PREFIX: &str = "/powehi";

/// The public document for a gateway with path prefix `prefix` (normalized:
/// `""` or `/name`), with or without `/metrics`.
pub fn public_document(prefix: &str, metrics: bool) -> anyhow::Result<web::Bytes> {
    let mut document: Value =
        serde_json::from_str(PUBLIC_SOURCE).context("openapi/public.json is not JSON")?;
    let paths = document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .context("openapi/public.json has no paths")?;
    let mut served = Map::new();
    for (path, item) in std::mem::take(paths) {
        let path = match path.strip_prefix(DOCUMENTED_PREFIX) {
            Some(rest) if rest.starts_with('/') => {
                if prefix.is_empty() {
                    continue;
                }
                format!("{prefix}{rest}")
            }
            _ if path == "/metrics" && !metrics => continue,
            _ => path,
        };
        served.insert(path, item);
    }
    *paths = served;
    Ok(serde_json::to_vec(&document)?.into())
}

/// The admin document, as written.
pub fn admin_document() -> anyhow::Result<web::Bytes> {
    let document: Value =
        serde_json::from_str(ADMIN_SOURCE).context("openapi/admin.json is not JSON")?;
    Ok(serde_json::to_vec(&document)?.into())
}

/// The route that answers `document`.
pub fn serve(document: web::Bytes) -> Route {
    web::to(move || {
        let document = document.clone();
        async move {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(document)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use actix_web::http::Method;

    use super::*;
    use crate::routes::{self, PublicOptions, Routes};

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    type Operations = BTreeSet<(String, String)>;

    fn documented(document: &[u8]) -> Operations {
        let document: Value = serde_json::from_slice(document).expect("served JSON");
        let mut operations = Operations::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if METHODS.contains(&method.as_str()) {
                    operations.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        operations
    }

    /// The table as a set; a route declared twice fails here.
    fn routed(table: Vec<(Method, String)>) -> Operations {
        let mut operations = Operations::new();
        for (method, path) in table {
            let fresh = operations.insert((method.to_string(), path.clone()));
            assert!(fresh, "{method} {path} is declared twice in routes.rs");
        }
        operations
    }

    fn assert_same(listener: &str, routed: &Operations, documented: &Operations) {
        let undocumented: Vec<_> = routed.difference(documented).collect();
        let unrouted: Vec<_> = documented.difference(routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "{listener}: routes missing from the OpenAPI document: {undocumented:?}; \
             documented operations no route serves: {unrouted:?}"
        );
    }

    #[test]
    fn the_public_document_lists_exactly_the_public_routes_for_any_prefix() {
        for prefix in [DOCUMENTED_PREFIX, "", "/events/in"] {
            for metrics in [true, false] {
                let document = public_document(prefix, metrics).expect("document");
                let options = PublicOptions {
                    prefix: prefix.to_string(),
                    metrics,
                    openapi: document.clone(),
                };
                let table = Routes::listing("", |r| routes::public(r, &options));
                assert_same(
                    &format!("public listener, prefix {prefix:?}, metrics {metrics}"),
                    &routed(table),
                    &documented(&document),
                );
            }
        }
    }

    #[test]
    fn the_admin_document_lists_exactly_the_admin_routes() {
        let document = admin_document().expect("document");
        let mut table = Routes::listing("", |r| routes::admin(r, &document));
        table.extend(Routes::listing("/v1", routes::admin_v1));
        assert_same("admin listener", &routed(table), &documented(&document));
    }

    /// Every `$ref` of `value` names something in `document`.
    fn check_refs(document: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let pointer = target.strip_prefix('#').unwrap_or("(external)");
                    if document.pointer(pointer).is_none() {
                        problems.push(format!("{at}: $ref {target} resolves to nothing"));
                    }
                }
                for (key, inner) in map {
                    check_refs(document, inner, &format!("{at}/{key}"), problems);
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    check_refs(document, inner, &format!("{at}/{i}"), problems);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn both_documents_are_openapi_3_1_with_unique_operation_ids_and_resolving_refs() {
        for (name, source) in [("public.json", PUBLIC_SOURCE), ("admin.json", ADMIN_SOURCE)] {
            let document: Value = serde_json::from_str(source).expect("JSON");
            assert_eq!(document["openapi"], "3.1.0", "{name}");
            let mut problems = Vec::new();
            check_refs(&document, &document, "#", &mut problems);
            let mut ids = BTreeSet::new();
            for (path, item) in document["paths"].as_object().expect("paths") {
                for (method, operation) in item.as_object().expect("path item") {
                    if !METHODS.contains(&method.as_str()) {
                        continue;
                    }
                    match operation["operationId"].as_str() {
                        Some(id) if ids.insert(id.to_string()) => {}
                        other => problems.push(format!(
                            "{method} {path}: operationId {other:?} missing or repeated"
                        )),
                    }
                }
            }
            assert!(problems.is_empty(), "{name}: {problems:#?}");
        }
    }

    /// Everything the listeners serve must come from `routes.rs`, or the tests
    /// above would not see it: no other file may register a route, resource,
    /// scope or service with actix, but the admin API's `/v1` scope, whose
    /// routes are `routes::admin_v1`.
    #[test]
    fn no_route_is_registered_outside_the_route_table() {
        const REGISTERING: [&str; 8] = [
            ".route(",
            ".service(",
            "web::resource(",
            "web::scope(",
            "#[get(",
            "#[post(",
            "#[put(",
            "#[delete(",
        ];
        const ALLOWED: [(&str, &str); 2] = [
            ("admin/mod.rs", "config.service("),
            ("admin/mod.rs", "web::scope(\"/v1\")"),
        ];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut found = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(
                    std::fs::read_dir(&path)
                        .expect("src dir")
                        .map(|e| e.expect("entry").path()),
                );
                continue;
            }
            let name = path
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            if name == "routes.rs" || !name.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            // Test modules serve nothing (and this one names what it looks for).
            let served = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (number, line) in served.lines().enumerate() {
                for needle in REGISTERING {
                    let allowed = ALLOWED
                        .iter()
                        .any(|(file, snippet)| *file == name && line.contains(snippet));
                    if line.contains(needle) && !allowed && !line.trim_start().starts_with("//") {
                        found.push(format!("{name}:{}: {}", number + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "routes registered outside routes.rs (declare them there, and document them): {found:#?}"
        );
    }
}
