//! The console's files, compiled into the binary (no CDN, no build step: plain
//! ES modules and CSS from `ingest-gateway/assets/console/`), served at
//! `/console/<name>`.

use std::sync::OnceLock;

use actix_web::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../../assets/console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("sources.js", JS),
    asset!("schemas.js", JS),
    asset!("events.js", JS),
    asset!("profile.js", JS),
];

/// Only this origin's scripts and styles, no frames (clickjacking), no plugins.
/// Inline SVG is document content, not a resource, so the charts need no
/// exception.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Validators per file, so a reload after an upgrade fetches the new files
/// and otherwise costs a 304 (FNV-1a of the bytes).
fn etag(asset: &Asset) -> String {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = a
                    .body
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
                    });
                format!("\"{digest:016x}\"")
            })
            .collect()
    });
    ASSETS
        .iter()
        .position(|a| a.name == asset.name)
        .and_then(|i| tags.get(i).cloned())
        .unwrap_or_default()
}

fn serve(request: &HttpRequest, name: &str) -> Option<HttpResponse> {
    let asset = ASSETS.iter().find(|a| a.name == name)?;
    let tag = etag(asset);
    let unchanged = request
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((ETAG, tag))
        // Revalidated on every load: the console follows the gateway's version.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header((CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((X_FRAME_OPTIONS, "DENY"))
        .insert_header((REFERRER_POLICY, "same-origin"));
    Some(if unchanged {
        response.finish()
    } else {
        response
            .insert_header((CONTENT_TYPE, asset.content_type))
            .body(asset.body)
    })
}

/// `GET /console/`: the single page.
pub async fn index(request: HttpRequest) -> HttpResponse {
    serve(&request, "index.html").unwrap_or_else(|| HttpResponse::NotFound().finish())
}

/// `GET /console/{file}`.
pub async fn file(request: HttpRequest, name: web::Path<String>) -> HttpResponse {
    serve(&request, &name).unwrap_or_else(|| {
        crate::admin::AdminError::NotFound(format!("the console has no file {:?}", name.as_str()))
            .error_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        // A module imported by another but missing from ASSETS would 404 in
        // the browser and leave a blank page.
        for asset in ASSETS {
            for line in asset.body.lines() {
                let Some(rest) = line.split(" from './").nth(1) else {
                    continue;
                };
                let imported = rest.split('\'').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|a| a.name == imported),
                    "{} imports {imported}, which is not served",
                    asset.name
                );
            }
        }
    }
}
