//! The public event shape of the Events Tracking API and its envelope checks.
//!
//! [`check_event`] is the one definition of "a well-formed event": the gateway calls
//! it to refuse an event (answering its index, code and message), the worker calls
//! it again on the same bytes to build the row, so both always agree. It looks only
//! at the envelope fields; `properties` are the event schema's business.
//!
//! Fields are read as raw JSON first and typed one by one, so a wrong type is
//! reported against the field that has it instead of as an opaque parse error.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::reason::{Reason, ReasonCode};
use crate::time::{parse_iso8601, TimeError};

/// `source` / `target` of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRef<'a> {
    pub item_id: Cow<'a, str>,
    pub item_type: Cow<'a, str>,
}

/// The envelope fields of an event that passed [`check_event`].
#[derive(Debug, Clone)]
pub struct EventFields<'a> {
    pub event_type: Cow<'a, str>,
    pub session_id: Cow<'a, str>,
    pub scope: Cow<'a, str>,
    /// `timeStamp`: when the event happened (logical time).
    pub time_stamp: DateTime<Utc>,
    /// `sendAt`: when the producer sent it, if it says so.
    pub send_at: Option<DateTime<Utc>>,
    /// `properties`, a JSON object, as sent (absent or `null` means `{}`).
    pub properties: Option<&'a RawValue>,
    pub source: Option<ItemRef<'a>>,
    pub target: Option<ItemRef<'a>>,
    pub profile_id: Option<Cow<'a, str>>,
    /// The producer's idempotency key for this event.
    pub item_id: Option<Cow<'a, str>>,
    /// `context`, a JSON object, as sent: what the sender's library knows of
    /// where the event happened (Segment's `context`: page, library, device,
    /// locale, …). Stored beside the properties, never validated.
    pub context: Option<&'a RawValue>,
}

/// Every envelope field, untyped. Unknown fields are ignored.
#[derive(Deserialize)]
struct RawFields<'a> {
    #[serde(rename = "eventType", borrow, default)]
    event_type: Option<&'a RawValue>,
    #[serde(rename = "sessionId", borrow, default)]
    session_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    scope: Option<&'a RawValue>,
    #[serde(rename = "timeStamp", borrow, default)]
    time_stamp: Option<&'a RawValue>,
    #[serde(rename = "sendAt", borrow, default)]
    send_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    target: Option<&'a RawValue>,
    #[serde(rename = "profileId", borrow, default)]
    profile_id: Option<&'a RawValue>,
    #[serde(rename = "itemId", borrow, default)]
    item_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawItemRef<'a> {
    #[serde(rename = "itemId", borrow)]
    item_id: Cow<'a, str>,
    #[serde(rename = "itemType", borrow)]
    item_type: Cow<'a, str>,
}

/// Checks the envelope of one event; `client_id` is the authenticated `X-Client-ID`.
pub fn check_event<'a>(raw: &'a RawValue, client_id: &str) -> Result<EventFields<'a>, Reason> {
    // serde would also read a struct from a JSON array: only objects are events.
    if !raw.get().starts_with('{') {
        return Err(Reason::new(
            ReasonCode::InvalidEvent,
            "$",
            "an event must be a JSON object",
        ));
    }
    let fields: RawFields<'a> = serde_json::from_str(raw.get()).map_err(|e| {
        Reason::new(
            ReasonCode::InvalidEvent,
            "$",
            format!("the event could not be read: {e}"),
        )
    })?;

    let event_type = required_text(fields.event_type, "eventType", TextKind::StringOnly)
        .map_err(|e| e.into_reason(ReasonCode::MissingEventType))?;
    let session_id = required_text(fields.session_id, "sessionId", TextKind::StringOrNumber)
        .map_err(|e| e.into_reason(ReasonCode::MissingSessionId))?;
    let scope = required_text(fields.scope, "scope", TextKind::StringOrNumber)
        .map_err(|e| e.into_reason(ReasonCode::MissingScope))?;
    if scope != client_id {
        return Err(Reason::new(
            ReasonCode::ScopeMismatch,
            "$.scope",
            format!("scope {scope:?} must equal the X-Client-ID header {client_id:?}"),
        ));
    }
    let time_stamp = match fields.time_stamp.filter(|v| !is_null(v)) {
        None => {
            return Err(Reason::new(
                ReasonCode::MissingTimestamp,
                "$.timeStamp",
                "timeStamp is required: the ISO 8601 time the event happened",
            ))
        }
        Some(value) => timestamp(value, "timeStamp", ReasonCode::InvalidTimestamp)?,
    };
    let send_at = match fields.send_at.filter(|v| !is_null(v)) {
        None => None,
        Some(value) => Some(timestamp(value, "sendAt", ReasonCode::InvalidField)?),
    };
    let properties = object_field(fields.properties, "properties")?;
    let context = object_field(fields.context, "context")?;
    Ok(EventFields {
        event_type,
        session_id,
        scope,
        time_stamp,
        send_at,
        properties,
        source: item_ref(fields.source, "source")?,
        target: item_ref(fields.target, "target")?,
        profile_id: optional_text(fields.profile_id, "profileId")?,
        item_id: optional_text(fields.item_id, "itemId")?,
        context,
    })
}

/// An optional field that must be a JSON object (`null` counts as absent).
fn object_field<'a>(
    value: Option<&'a RawValue>,
    name: &str,
) -> Result<Option<&'a RawValue>, Reason> {
    match value.filter(|v| !is_null(v)) {
        Some(value) if !value.get().trim_start().starts_with('{') => {
            Err(invalid_field(name, "must be a JSON object"))
        }
        other => Ok(other),
    }
}

/// The profile an event belongs to: its `profileId`, else the anonymous
/// profile of its session (one per data source and session).
pub fn profile_of(scope: &str, session_id: &str, profile_id: Option<&str>) -> String {
    match profile_id {
        Some(id) => id.to_string(),
        None => anonymous_profile_id(scope, session_id),
    }
}

/// `anon:<scope>:<sessionId>`: readable, and the same on every worker.
pub fn anonymous_profile_id(scope: &str, session_id: &str) -> String {
    format!("anon:{scope}:{session_id}")
}

/// What can still be read from an event that failed its checks, for the event
/// log's columns. Anything unreadable is left empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BestEffortIds {
    pub event_type: String,
    pub session_id: String,
    pub profile_id: String,
    pub time_stamp: Option<DateTime<Utc>>,
}

pub fn best_effort_ids(raw: &RawValue) -> BestEffortIds {
    if !raw.get().starts_with('{') {
        return BestEffortIds::default();
    }
    let Ok(fields) = serde_json::from_str::<RawFields<'_>>(raw.get()) else {
        return BestEffortIds::default();
    };
    let text = |value: Option<&RawValue>| {
        value
            .and_then(|v| string(v).or_else(|| number(v)))
            .map(Cow::into_owned)
            .unwrap_or_default()
    };
    BestEffortIds {
        event_type: text(fields.event_type),
        session_id: text(fields.session_id),
        profile_id: text(fields.profile_id),
        time_stamp: fields
            .time_stamp
            .and_then(string)
            .and_then(|t| parse_iso8601(&t).ok()),
    }
}

#[derive(Clone, Copy)]
enum TextKind {
    StringOnly,
    /// Ids a producer may interpolate unquoted, as the reference curl does.
    StringOrNumber,
}

enum TextError {
    Missing(&'static str),
    WrongType(Reason),
}

impl TextError {
    fn into_reason(self, missing_code: ReasonCode) -> Reason {
        match self {
            Self::Missing(name) => Reason::new(
                missing_code,
                format!("$.{name}"),
                format!("{name} is required and must not be empty"),
            ),
            Self::WrongType(reason) => reason,
        }
    }
}

fn required_text<'a>(
    value: Option<&'a RawValue>,
    name: &'static str,
    kind: TextKind,
) -> Result<Cow<'a, str>, TextError> {
    let value = value
        .filter(|v| !is_null(v))
        .ok_or(TextError::Missing(name))?;
    let text = match kind {
        TextKind::StringOnly => string(value),
        TextKind::StringOrNumber => string(value).or_else(|| number(value)),
    };
    let text = text.ok_or_else(|| {
        let expected = match kind {
            TextKind::StringOnly => "a string",
            TextKind::StringOrNumber => "a string or a number",
        };
        TextError::WrongType(invalid_field(name, &format!("must be {expected}")))
    })?;
    if text.trim().is_empty() {
        return Err(TextError::Missing(name));
    }
    Ok(text)
}

fn optional_text<'a>(
    value: Option<&'a RawValue>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, Reason> {
    match value.filter(|v| !is_null(v)) {
        None => Ok(None),
        Some(value) => string(value)
            .map(|text| Some(text).filter(|t| !t.is_empty()))
            .ok_or_else(|| invalid_field(name, "must be a string")),
    }
}

fn timestamp(value: &RawValue, name: &str, code: ReasonCode) -> Result<DateTime<Utc>, Reason> {
    let problem = match string(value) {
        None => "must be an ISO 8601 string such as 2021-10-15T18:49:00+07:00",
        Some(text) => match parse_iso8601(&text) {
            Ok(time) => return Ok(time),
            Err(TimeError::NotIso8601) => {
                "is not ISO 8601 (expected e.g. 2021-10-15T18:49:00+07:00)"
            }
            Err(TimeError::OutOfRange) => "is outside 1970-01-01..2105-12-31",
        },
    };
    Err(Reason::new(
        code,
        format!("$.{name}"),
        format!("{name} {} {problem}", value.get()),
    ))
}

fn item_ref<'a>(value: Option<&'a RawValue>, name: &str) -> Result<Option<ItemRef<'a>>, Reason> {
    match value.filter(|v| !is_null(v)) {
        None => Ok(None),
        Some(value) => serde_json::from_str::<RawItemRef<'a>>(value.get())
            .map(|r| {
                Some(ItemRef {
                    item_id: r.item_id,
                    item_type: r.item_type,
                })
            })
            .map_err(|_| invalid_field(name, "must be an object with string itemId and itemType")),
    }
}

fn invalid_field(name: &str, problem: &str) -> Reason {
    Reason::new(
        ReasonCode::InvalidField,
        format!("$.{name}"),
        format!("{name} {problem}"),
    )
}

fn is_null(value: &RawValue) -> bool {
    value.get() == "null"
}

fn string(value: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Cow<'_, str>>(value.get()).ok()
}

fn number(value: &RawValue) -> Option<Cow<'_, str>> {
    let text = value.get();
    serde_json::from_str::<serde_json::Number>(text)
        .ok()
        .map(|_| Cow::Borrowed(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap_or_else(|_| panic!("bad test json {json}"))
    }

    const REFERENCE: &str = r#"{
        "eventType": "view", "sessionId": 42, "properties": {}, "scope": "demo",
        "timeStamp": "2021-10-15T18:49:00+07:00",
        "source": { "itemId": "_", "itemType": "_" },
        "target": { "itemId": "_", "itemType": "_" }
    }"#;

    fn code_of(json: &str) -> Option<ReasonCode> {
        let event = raw(json);
        check_event(&event, "demo").err().map(|r| r.code)
    }

    #[test]
    fn reference_event_passes_with_numeric_session_id() {
        let event = raw(REFERENCE);
        let fields = check_event(&event, "demo").map_err(|r| r.message);
        let fields = fields
            .as_ref()
            .map(|f| (f.session_id.as_ref(), f.time_stamp.timestamp()));
        assert_eq!(fields, Ok(("42", 1_634_298_540)));
    }

    #[test]
    fn each_broken_envelope_field_gets_its_own_code() {
        let cases = [
            ("[1]", ReasonCode::InvalidEvent),
            (
                r#"{"sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#,
                ReasonCode::MissingEventType,
            ),
            (
                r#"{"eventType":"","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#,
                ReasonCode::MissingEventType,
            ),
            (
                r#"{"eventType":7,"sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#,
                ReasonCode::InvalidField,
            ),
            (
                r#"{"eventType":"view","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#,
                ReasonCode::MissingSessionId,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","timeStamp":"2021-10-15T18:49:00Z"}"#,
                ReasonCode::MissingScope,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"other","timeStamp":"2021-10-15T18:49:00Z"}"#,
                ReasonCode::ScopeMismatch,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo"}"#,
                ReasonCode::MissingTimestamp,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"soon"}"#,
                ReasonCode::InvalidTimestamp,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":1634298540}"#,
                ReasonCode::InvalidTimestamp,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","properties":[]}"#,
                ReasonCode::InvalidField,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","source":{"itemId":1}}"#,
                ReasonCode::InvalidField,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","sendAt":"later"}"#,
                ReasonCode::InvalidField,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","itemId":5}"#,
                ReasonCode::InvalidField,
            ),
            (
                r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","context":"web"}"#,
                ReasonCode::InvalidField,
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(code_of(json), Some(expected), "{json}");
        }
    }

    #[test]
    fn refusal_names_the_field_and_the_expected_format() {
        let event =
            raw(r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"soon"}"#);
        let reason = check_event(&event, "demo").err();
        let reason = reason
            .as_ref()
            .map(|r| (r.path.as_str(), r.message.contains("ISO 8601")));
        assert_eq!(reason, Some(("$.timeStamp", true)));
    }

    #[test]
    fn best_effort_ids_read_what_is_readable() {
        let event = raw(
            r#"{"eventType":"view","sessionId":7,"scope":"x","timeStamp":"bad","profileId":["no"]}"#,
        );
        let ids = best_effort_ids(&event);
        assert_eq!(
            (
                ids.event_type.as_str(),
                ids.session_id.as_str(),
                ids.profile_id.as_str()
            ),
            ("view", "7", "")
        );
        assert_eq!(ids.time_stamp, None);
        assert_eq!(best_effort_ids(&raw("[1,2]")), BestEffortIds::default());
    }

    #[test]
    fn optional_fields_are_read_when_present() {
        let event = raw(
            r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z",
                "sendAt":"2021-10-15T18:49:01.5Z","profileId":"p1","itemId":"e1",
                "source":{"itemId":"home","itemType":"page"},"context":{"library":{"name":"x"}}}"#,
        );
        let fields = check_event(&event, "demo").map_err(|r| r.message);
        let Ok(fields) = fields else {
            panic!("{fields:?}")
        };
        assert_eq!(
            fields.send_at.map(|t| t.timestamp_millis()),
            Some(1_634_323_741_500)
        );
        assert_eq!(fields.profile_id.as_deref(), Some("p1"));
        assert_eq!(fields.item_id.as_deref(), Some("e1"));
        assert_eq!(
            fields.source.map(|s| s.item_type.into_owned()),
            Some("page".to_string())
        );
        assert!(fields.target.is_none());
        assert_eq!(
            fields.context.map(RawValue::get),
            Some(r#"{"library":{"name":"x"}}"#)
        );
    }
}
