//! The record the gateway writes to `powehi.events.raw`, one per event.
//!
//! The producer's event travels byte for byte (`event`), so the worker sees exactly
//! what was sent, and the gateway never re-serializes it. Events the gateway refused
//! travel too, with their `refusals`, so the event log shows them as rejected.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::EventPolicy;
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
    /// Where the request came from (the same for every event of a request).
    #[serde(
        rename = "ctx",
        borrow,
        default,
        skip_serializing_if = "RequestContext::is_empty"
    )]
    pub context: RequestContext<'a>,
    /// The data source's policy for unplanned event types and undeclared
    /// properties when the gateway accepted the event: the worker applies
    /// this one, not whatever the source's policy is when it decodes the
    /// record, so the row is a function of the record (see
    /// `event-worker/src/replay.rs`). Left out while it is the default.
    #[serde(
        rename = "pol",
        default,
        skip_serializing_if = "EventPolicy::is_default"
    )]
    pub policy: EventPolicy,
    /// Why the gateway refused the event; empty when it was accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Reason>,
    /// Set on a replay of a rejected event (an admin replay job): the worker
    /// stores the event under the rejected record's identity, not this
    /// record's (the argument is in event-worker's `replay` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayMarker>,
    #[serde(borrow)]
    pub event: &'a RawValue,
}

/// Where the rejected event a replay record carries was first stored, and
/// when it was rejected and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayMarker {
    /// The replay job that sent it.
    pub job: String,
    /// Kafka partition and offset of the rejected record: the identity its
    /// rows keep.
    pub partition: u32,
    pub offset: u64,
    /// When the rejection was stored (`rejected_events.inserted_at`), epoch ms.
    #[serde(rename = "rejectedAt")]
    pub rejected_at_ms: u64,
    /// When the job sent it, epoch ms.
    #[serde(rename = "replayedAt")]
    pub replayed_at_ms: u64,
}

/// What the gateway knows of a request's sender, kept per event so analysts
/// can tell where events came from: the client's IP (the peer, or the
/// `X-Forwarded-For` hop a trusted proxy vouches for), its `User-Agent`, and
/// the page it was sent from (`Origin`, `Referer`). Empty when unknown; the
/// gateway bounds each value's length.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RequestContext<'a> {
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub ip: Cow<'a, str>,
    #[serde(rename = "ua", borrow, default, skip_serializing_if = "str::is_empty")]
    pub user_agent: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub origin: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub referer: Cow<'a, str>,
}

impl RequestContext<'_> {
    /// The same context, borrowing this one's strings.
    pub fn borrowed(&self) -> RequestContext<'_> {
        RequestContext {
            ip: Cow::Borrowed(&self.ip),
            user_agent: Cow::Borrowed(&self.user_agent),
            origin: Cow::Borrowed(&self.origin),
            referer: Cow::Borrowed(&self.referer),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ip.is_empty()
            && self.user_agent.is_empty()
            && self.origin.is_empty()
            && self.referer.is_empty()
    }
}

impl<'a> Envelope<'a> {
    pub fn new(id: Cow<'a, str>, scope: &'a str, received_at_ms: i64, event: &'a RawValue) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            id,
            scope: Cow::Borrowed(scope),
            received_at_ms,
            config_position: None,
            context: RequestContext::default(),
            policy: EventPolicy::default(),
            refusals: Vec::new(),
            replay: None,
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
        assert!(decoded.context.is_empty());
        assert!(decoded.policy.is_default());
        assert!(decoded.replay.is_none());
        assert!(!String::from_utf8_lossy(&bytes).contains("replay"));
    }

    #[test]
    fn a_replay_marker_travels() {
        let Ok(event) = RawValue::from_string("{}".to_string()) else {
            panic!("raw value")
        };
        let mut envelope = Envelope::new(Cow::Borrowed("e1"), "demo", 1, &event);
        let marker = ReplayMarker {
            job: "j1".into(),
            partition: 3,
            offset: 42,
            rejected_at_ms: 5_000,
            replayed_at_ms: 9_000,
        };
        envelope.replay = Some(marker.clone());
        let bytes = envelope.to_bytes();
        let decoded = Envelope::from_bytes(&bytes).map(|e| e.replay);
        assert_eq!(decoded, Ok(Some(marker)));
    }

    #[test]
    fn a_policy_other_than_the_default_travels() {
        let Ok(event) = RawValue::from_string("{}".to_string()) else {
            panic!("raw value")
        };
        let mut envelope = Envelope::new(Cow::Borrowed("e1"), "demo", 1, &event);
        assert!(!String::from_utf8_lossy(&envelope.to_bytes()).contains("pol"));
        envelope.policy.unplanned_events = crate::config::UnplannedEvents::Accept;
        let bytes = envelope.to_bytes();
        assert!(String::from_utf8_lossy(&bytes)
            .contains(r#""pol":{"unplannedEvents":"accept","undeclaredProperties":"trim"}"#));
        let Ok(decoded) = Envelope::from_bytes(&bytes) else {
            panic!("decodes")
        };
        assert_eq!(decoded.policy.label(), "accept/trim");
    }

    #[test]
    fn request_context_travels_and_is_left_out_when_empty() {
        let Ok(event) = RawValue::from_string("{}".to_string()) else {
            panic!("raw value")
        };
        let mut envelope = Envelope::new(Cow::Borrowed("e1"), "demo", 1, &event);
        assert!(!String::from_utf8_lossy(&envelope.to_bytes()).contains("ctx"));
        envelope.context.ip = Cow::Borrowed("203.0.113.9");
        envelope.context.user_agent = Cow::Borrowed("Mozilla/5.0 \"quoted\"");
        let bytes = envelope.to_bytes();
        let Ok(decoded) = Envelope::from_bytes(&bytes) else {
            panic!("decodes")
        };
        assert_eq!(decoded.context.ip, "203.0.113.9");
        assert_eq!(decoded.context.user_agent, "Mozilla/5.0 \"quoted\"");
        assert!(decoded.context.origin.is_empty());
    }

    #[test]
    fn refuses_garbage_and_unknown_versions() {
        assert!(Envelope::from_bytes(b"not json").is_err());
        let future = br#"{"v":99,"id":"e","scope":"s","receivedAt":1,"event":{}}"#;
        let err = Envelope::from_bytes(future).err().unwrap_or_default();
        assert!(err.contains("version 99"), "{err}");
    }
}
