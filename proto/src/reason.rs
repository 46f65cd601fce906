//! Machine-readable reasons why an event was refused (gateway) or rejected (worker).

use serde::{Deserialize, Serialize};

/// Stable codes: producers and analysts match on them, so never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The event is not a JSON object.
    InvalidEvent,
    MissingEventType,
    MissingSessionId,
    MissingScope,
    /// `scope` differs from the authenticated `X-Client-ID`.
    ScopeMismatch,
    MissingTimestamp,
    /// `timeStamp` is not ISO 8601 or outside what the event log can store.
    InvalidTimestamp,
    /// An envelope field has the wrong JSON type or shape.
    InvalidField,
    /// The event's time (corrected by `sendAt` when given) is further ahead
    /// of the gateway's clock than the configured tolerance.
    TimeInFuture,
    /// The serialized event is larger than the per-event limit.
    EventTooLarge,
    /// A Kafka record the worker could not decode as an envelope.
    UndecodableRecord,
    /// ClickHouse refused to store this one row (the rest of its batch was
    /// stored); the message carries ClickHouse's exception.
    StorageRefused,
    /// No event schema is registered for the event's type.
    UnknownEventType,
    /// A property the schema requires is absent (or null).
    MissingProperty,
    /// A declared property has another JSON type than the schema says.
    WrongType,
    /// The schema requires `source` and the event has none.
    MissingSource,
    /// The schema requires `target` and the event has none.
    MissingTarget,
    /// Any code this build does not know (written by a newer version).
    #[serde(other)]
    Unknown,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidEvent => "invalid_event",
            Self::MissingEventType => "missing_event_type",
            Self::MissingSessionId => "missing_session_id",
            Self::MissingScope => "missing_scope",
            Self::ScopeMismatch => "scope_mismatch",
            Self::MissingTimestamp => "missing_timestamp",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::InvalidField => "invalid_field",
            Self::TimeInFuture => "time_in_future",
            Self::EventTooLarge => "event_too_large",
            Self::UndecodableRecord => "undecodable_record",
            Self::StorageRefused => "storage_refused",
            Self::UnknownEventType => "unknown_event_type",
            Self::MissingProperty => "missing_property",
            Self::WrongType => "wrong_type",
            Self::MissingSource => "missing_source",
            Self::MissingTarget => "missing_target",
            Self::Unknown => "unknown",
        }
    }
}

/// One reason: what is wrong (`code`), where (`path`, a JSON path into the event such
/// as `$.timeStamp`) and a sentence a developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub path: String,
    pub message: String,
}

impl Reason {
    pub fn new(code: ReasonCode, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            path: path.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_documented_strings() {
        for code in [
            ReasonCode::InvalidEvent,
            ReasonCode::MissingEventType,
            ReasonCode::ScopeMismatch,
            ReasonCode::TimeInFuture,
            ReasonCode::EventTooLarge,
            ReasonCode::UndecodableRecord,
            ReasonCode::StorageRefused,
        ] {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn unknown_code_from_a_newer_writer_still_decodes() {
        let code: ReasonCode =
            serde_json::from_str("\"from_the_future\"").unwrap_or(ReasonCode::InvalidEvent);
        assert_eq!(code, ReasonCode::Unknown);
    }
}
