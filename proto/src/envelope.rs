//! The record the gateway writes to `powehi.events.raw`, one per event.
//!
//! The producer's event travels byte for byte (`event`), so the worker sees exactly
//! what was sent, and the gateway never re-serializes it. Events the gateway refused
//! travel too, with their `refusals`, so the event log shows them as rejected.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::reason::Reason;
use crate::topics::ENVELOPE_VERSION;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<'a> {
    /// Format version, [`ENVELOPE_VERSION`] when written by this build.
    pub v: u32,
    /// Event id: the producer's `itemId` when given, else a time-ordered UUID (v7).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The authenticated data source (`X-Client-ID`).
    #[serde(borrow)]
    pub scope: Cow<'a, str>,
    /// When the gateway received the request, epoch milliseconds.
    #[serde(rename = "receivedAt")]
    pub received_at_ms: i64,
    /// The gateway's config-log position when it accepted the event (the
    /// [`ConfigSnapshot::position`](crate::config::ConfigSnapshot::position) it
    /// authenticated with). The worker validates the event only once its own
    /// follower has applied the log that far: a schema the accepting gateway
    /// knew is never missed because the worker's follower lags. Absent in
    /// records written before it existed.
    #[serde(rename = "cfg", default, skip_serializing_if = "Option::is_none")]
    pub config_position: Option<i64>,
    /// Why the gateway refused the event; empty when it was accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Reason>,
    #[serde(borrow)]
    pub event: &'a RawValue,
}

impl<'a> Envelope<'a> {
    pub fn new(id: Cow<'a, str>, scope: &'a str, received_at_ms: i64, event: &'a RawValue) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            id,
            scope: Cow::Borrowed(scope),
            received_at_ms,
            config_position: None,
            refusals: Vec::new(),
            event,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing borrowed strings and a raw value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a record; `Err` carries a sentence for the rejection reason.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, String> {
        let envelope: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Powehi envelope: {e}"))?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(format!(
                "envelope version {} is not supported (this worker reads version {ENVELOPE_VERSION})",
                envelope.v
            ));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::ReasonCode;

    #[test]
    fn round_trips_the_event_byte_for_byte() {
        let event = RawValue::from_string(r#"{ "eventType" : "view" }"#.to_string()).ok();
        let Some(event) = event else {
            panic!("raw value")
        };
        let mut envelope = Envelope::new(Cow::Borrowed("e1"), "demo", 1_700_000_000_123, &event);
        envelope
            .refusals
            .push(Reason::new(ReasonCode::ScopeMismatch, "$.scope", "no"));
        let bytes = envelope.to_bytes();
        let decoded = Envelope::from_bytes(&bytes);
        let Ok(decoded) = decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(decoded.event.get(), r#"{ "eventType" : "view" }"#);
        assert_eq!(decoded.received_at_ms, 1_700_000_000_123);
        assert_eq!(decoded.refusals[0].code, ReasonCode::ScopeMismatch);
    }

    #[test]
    fn refuses_garbage_and_unknown_versions() {
        assert!(Envelope::from_bytes(b"not json").is_err());
        let future = br#"{"v":99,"id":"e","scope":"s","receivedAt":1,"event":{}}"#;
        let err = Envelope::from_bytes(future).err().unwrap_or_default();
        assert!(err.contains("version 99"), "{err}");
    }
}
