//! `/powehi.js`: the tracker script web pages load with a `<script>` tag
//! (see README, "Sending from web pages"). Built into the binary, so a gateway
//! serves it with no internet and no CDN, at the version that matches its API.

use std::sync::OnceLock;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use actix_web::{HttpRequest, HttpResponse};

const SCRIPT: &str = include_str!("../assets/powehi.js");

/// Pages revalidate the script at most every few minutes, so a gateway
/// upgrade reaches them soon without every page view fetching it.
const CACHE: &str = "public, max-age=300";

/// A strong validator that changes with the script's bytes (FNV-1a).
fn etag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let digest = SCRIPT
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("\"{digest:016x}\"")
    })
}

pub async fn script(request: HttpRequest) -> HttpResponse {
    let tag = etag();
    let unchanged = request
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if unchanged {
        return HttpResponse::NotModified()
            .insert_header((ETAG, tag))
            .insert_header((CACHE_CONTROL, CACHE))
            .finish();
    }
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .insert_header((ETAG, tag))
        .insert_header((CACHE_CONTROL, CACHE))
        .body(SCRIPT)
}
