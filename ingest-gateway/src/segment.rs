//! Segment's HTTP tracking API, so an app that sends with Segment's (or
//! RudderStack's) libraries can point them at Powehi unchanged: `POST
//! /v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`,
//! `/v1/alias` and `/v1/batch`, at the root and under the prefix.
//!
//! The write key is the HTTP Basic user name (empty password), or `writeKey`
//! in the body, as the libraries send it; it alone names the data source
//! (found by its hash, see [`crate::auth::Registry::authenticate_key`]).
//! Each message becomes one Powehi event ([`to_event`], the table in the
//! README's "Segment-compatible ingest"), and from there on it is ingested
//! exactly like an event sent to `/smile`: the same limits, records,
//! refusals and acknowledgement.
//!
//! Answers follow what Segment's libraries act on: 200 when anything was
//! accepted (refused events listed, as `/smile` does), 400 when nothing was
//! (never retried), 429 and 503 with Retry-After (retried). Limits are
//! Segment's: a request over 500 KB is a 400 `batch_too_large`, a message
//! over 32 KB (`POWEHI_MAX_EVENT_BYTES`) is refused as `event_too_large`.

use std::time::Instant;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::errors::ApiError;
use crate::ingest;
use crate::AppState;

/// Segment's documented limit on a request body (its libraries batch below
/// it): 500 KB, counted after decompression.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The calls of Segment's API, by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    Batch,
}

impl Call {
    pub const ALL: [Call; 7] = [
        Call::Track,
        Call::Identify,
        Call::Page,
        Call::Screen,
        Call::Group,
        Call::Alias,
        Call::Batch,
    ];

    /// The call's name: its route (`/v1/{name}`), a batch message's `type`,
    /// and, but for `track`, the Powehi event type it makes.
    pub fn name(self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Identify => "identify",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Group => "group",
            Call::Alias => "alias",
            Call::Batch => "batch",
        }
    }

    fn named(text: &str) -> Option<Call> {
        Call::ALL.into_iter().find(|call| call.name() == text)
    }

    /// The call a message of `type` makes inside a batch.
    fn of_type(text: &str) -> Option<Call> {
        Call::named(text).filter(|call| *call != Call::Batch)
    }
}

/// `POST /v1/{call}` (and under the prefix): one route per call
/// (see [`crate::routes::public`]).
pub async fn handle(
    call: Call,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = ingest_call(call, &request, payload, &state).await;
    ingest::observe(&state, "segment", started, &result);
    result
}

async fn ingest_call(
    call: Call,
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let (received_at_ms, encoding) = ingest::open(request, state)?;
    let basic_key = basic_user(request)?;
    let mut ticket = state.admission.enter()?;
    let limit = MAX_BATCH_BYTES.min(state.config.max_body_bytes);
    let body = ingest::read_decoded_body(request, payload, encoding, limit, state, &mut ticket)
        .await
        .map_err(|e| match e {
            ApiError::PayloadTooLarge { limit } => ApiError::BatchTooLarge { limit },
            other => other,
        })?;
    let mut body: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => {
            return Err(ApiError::InvalidBody(
                "the body must be a JSON object (a Segment message, or {\"batch\": [...]} for /v1/batch)"
                    .into(),
            ))
        }
        Err(e) => return Err(ApiError::MalformedJson(e.to_string())),
    };
    let key = match basic_key {
        Some(key) => key,
        None => body
            .get("writeKey")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .ok_or(ApiError::MissingCredentials)?,
    };
    let source = state.registry.authenticate_key(&key)?;
    ingest::check_origin(request, &source)?;
    let received = iso(received_at_ms);
    let sent_at = body.get("sentAt").cloned();
    let events = messages(call, &mut body)?
        .into_iter()
        .map(|(call, message)| {
            let event = to_event(call, &message, &source.id, sent_at.as_ref(), &received);
            RawValue::from_string(event.to_string())
        })
        .collect::<Result<Vec<Box<RawValue>>, _>>()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    if events.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    let events: Vec<&RawValue> = events.iter().map(AsRef::as_ref).collect();
    let ingested =
        ingest::accept(request, &events, source, received_at_ms, &mut ticket, state).await?;
    let ack = ingested.into_ack()?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"success": true, "powehi": ack})))
}

/// The messages of a request, taken out of its body: the body itself for a
/// single call, the elements of `batch` (each naming its call by `type`) for
/// `/v1/batch`.
fn messages(
    call: Call,
    body: &mut Map<String, Value>,
) -> Result<Vec<(Option<Call>, Value)>, ApiError> {
    if call != Call::Batch {
        return Ok(vec![(Some(call), Value::Object(std::mem::take(body)))]);
    }
    let Some(Value::Array(batch)) = body.remove("batch") else {
        return Err(ApiError::InvalidBody(
            "a /v1/batch body is {\"batch\": [messages]}".into(),
        ));
    };
    Ok(batch
        .into_iter()
        .map(|message| {
            let call = message
                .get("type")
                .and_then(Value::as_str)
                .and_then(Call::of_type);
            (call, message)
        })
        .collect())
}

/// One Segment message as a Powehi event (the README's mapping table). What
/// cannot be mapped is left out, so the event's own checks refuse it with the
/// usual codes (`missing_event_type`, `missing_session_id`, …) and the event
/// log shows it as sent.
pub fn to_event(
    call: Option<Call>,
    message: &Value,
    scope: &str,
    batch_sent_at: Option<&Value>,
    received: &str,
) -> Value {
    let Some(fields) = message.as_object() else {
        return message.clone();
    };
    let text = |name: &str| -> Option<String> {
        match fields.get(name)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut event = Map::new();
    let event_type = match call {
        Some(Call::Track) => text("event"),
        Some(Call::Batch) | None => None,
        Some(other) => Some(other.name().to_string()),
    };
    if let Some(event_type) = event_type {
        event.insert("eventType".into(), event_type.into());
    }
    event.insert("scope".into(), scope.into());
    let user_id = text("userId");
    // alias: the earlier id (an anonymousId or an older userId) is the
    // session that merges into the profile `userId`.
    let session = if call == Some(Call::Alias) {
        text("previousId")
    } else {
        text("anonymousId").or_else(|| user_id.clone())
    };
    if let Some(session) = session {
        event.insert("sessionId".into(), session.into());
    }
    if let Some(user_id) = user_id {
        event.insert("profileId".into(), user_id.into());
    }
    if let Some(message_id) = text("messageId") {
        event.insert("itemId".into(), message_id.into());
    }
    let time = fields
        .get("timestamp")
        .or_else(|| fields.get("originalTimestamp"))
        .cloned()
        .unwrap_or_else(|| received.into());
    event.insert("timeStamp".into(), time);
    if let Some(sent_at) = fields.get("sentAt").or(batch_sent_at) {
        event.insert("sendAt".into(), sent_at.clone());
    }
    event.insert("properties".into(), Value::Object(properties(call, fields)));
    if let Some(context) = fields.get("context").filter(|c| !c.is_null()) {
        event.insert("context".into(), context.clone());
    }
    Value::Object(event)
}

/// What a message says about its subject, as the event's properties.
fn properties(call: Option<Call>, fields: &Map<String, Value>) -> Map<String, Value> {
    let object = |name: &str| match fields.get(name) {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    match call {
        // RudderStack's libraries send identify's traits in `context.traits`
        // (Segment's allow it too): those first, the message's own over them.
        Some(Call::Identify) => {
            let mut traits = match fields.get("context").and_then(|c| c.get("traits")) {
                Some(Value::Object(map)) => map.clone(),
                _ => Map::new(),
            };
            traits.extend(object("traits"));
            traits
        }
        Some(Call::Group) => {
            let mut traits = object("traits");
            if let Some(group) = fields.get("groupId") {
                traits.insert("groupId".into(), group.clone());
            }
            traits
        }
        Some(Call::Alias) => {
            let mut map = Map::new();
            if let Some(previous) = fields.get("previousId") {
                map.insert("previousId".into(), previous.clone());
            }
            map
        }
        Some(Call::Page | Call::Screen) => {
            let mut map = object("properties");
            for name in ["name", "category"] {
                if let Some(value) = fields.get(name) {
                    map.entry(name).or_insert_with(|| value.clone());
                }
            }
            map
        }
        _ => object("properties"),
    }
}

/// The write key of `Authorization: Basic base64(key:)`, if sent.
fn basic_user(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiError::InvalidCredentials)?;
    let Some((scheme, encoded)) = text.split_once(' ') else {
        return Err(ApiError::InvalidCredentials);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64_decode(encoded.trim()).ok_or(ApiError::InvalidCredentials)?;
    let decoded = String::from_utf8(decoded).map_err(|_| ApiError::InvalidCredentials)?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    Ok((!user.is_empty()).then(|| user.to_string()))
}

/// Standard base64 with optional padding (RFC 4648 §4); `None` when invalid.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in digits.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn iso(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RECEIVED: &str = "2026-12-06T12:00:00.000Z";

    fn mapped(call: Option<Call>, message: Value) -> Value {
        to_event(
            call,
            &message,
            "shop",
            Some(&json!("2026-12-06T12:00:01Z")),
            RECEIVED,
        )
    }

    #[test]
    fn a_track_becomes_an_event_of_its_name_with_its_ids_and_times() {
        let event = mapped(
            Some(Call::Track),
            json!({"type": "track", "event": "Order Completed", "anonymousId": "a1", "userId": 42,
                   "messageId": "m1", "timestamp": "2026-12-06T11:59:59Z", "properties": {"total": 9},
                   "context": {"library": {"name": "analytics-python"}}, "integrations": {}}),
        );
        assert_eq!(
            event,
            json!({"eventType": "Order Completed", "scope": "shop", "sessionId": "a1", "profileId": "42",
                   "itemId": "m1", "timeStamp": "2026-12-06T11:59:59Z",
                   "sendAt": "2026-12-06T12:00:01Z", "properties": {"total": 9},
                   "context": {"library": {"name": "analytics-python"}}})
        );
    }

    #[test]
    fn each_call_maps_its_subject() {
        let identify = mapped(
            Some(Call::Identify),
            json!({"userId": "u", "traits": {"plan": "pro"}, "sentAt": "2026-12-06T12:00:02Z"}),
        );
        assert_eq!(identify["eventType"], "identify");
        assert_eq!(
            (&identify["sessionId"], &identify["profileId"]),
            (&json!("u"), &json!("u"))
        );
        assert_eq!(identify["properties"], json!({"plan": "pro"}));
        let rudder = mapped(
            Some(Call::Identify),
            json!({"userId": "u", "context": {"traits": {"plan": "free", "seats": 3}},
                   "traits": {"plan": "pro"}}),
        );
        assert_eq!(
            rudder["properties"],
            json!({"plan": "pro", "seats": 3}),
            "context.traits, the message's own traits over them"
        );
        assert_eq!(
            identify["sendAt"], "2026-12-06T12:00:02Z",
            "the message's own sentAt first"
        );
        assert_eq!(identify["timeStamp"], RECEIVED, "no time given: received");
        let alias = mapped(
            Some(Call::Alias),
            json!({"previousId": "anon-7", "userId": "u"}),
        );
        assert_eq!(
            (&alias["sessionId"], &alias["profileId"]),
            (&json!("anon-7"), &json!("u"))
        );
        let page = mapped(
            Some(Call::Page),
            json!({"anonymousId": "a", "name": "Home", "properties": {"path": "/"}}),
        );
        assert_eq!(page["properties"], json!({"path": "/", "name": "Home"}));
        let group = mapped(
            Some(Call::Group),
            json!({"anonymousId": "a", "groupId": "g", "traits": {"n": 1}}),
        );
        assert_eq!(group["properties"], json!({"n": 1, "groupId": "g"}));
    }

    #[test]
    fn what_cannot_be_mapped_is_left_for_the_event_checks_to_refuse() {
        let unknown = mapped(None, json!({"type": "nonsense", "anonymousId": "a"}));
        assert!(unknown.get("eventType").is_none());
        let anonymous = mapped(Some(Call::Track), json!({"event": "x"}));
        assert!(anonymous.get("sessionId").is_none());
        assert_eq!(mapped(Some(Call::Track), json!([1])), json!([1]));
    }

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(base64_decode("a2V5Og=="), Some(b"key:".to_vec()));
        assert_eq!(base64_decode("a2V5Og"), Some(b"key:".to_vec()));
        assert_eq!(base64_decode("not base64!"), None);
    }
}
