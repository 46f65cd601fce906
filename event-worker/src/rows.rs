//! From a Kafka record to a ClickHouse row.
//!
//! Every record becomes exactly one row: an [`EventRow`] for an accepted event, a
//! [`RejectedRow`] for an event the gateway refused or a record that is not an
//! envelope at all (a poison record is stored, never retried, never stalls).
//!
//! A row's identity is the Kafka position in `kafka_partition`/`kafka_offset`:
//! the record's own, except for a replay of a rejected event, whose rows keep
//! the rejected record's position (see [`crate::replay`]). Where the record
//! itself sits is in [`EventRow::record`], for the batch's bookkeeping.

use clickhouse::Row;
use proto::config::ConfigSnapshot;
use proto::reason::{Reason, ReasonCode};
use proto::schema::{validate_under, Validated};
use proto::time::corrected_time_ms;
use proto::{best_effort_ids, check_event, profile_of, Envelope, EventFields};
use serde::Serialize;

/// How much of an undecodable record is kept in `rejected_events.raw`.
const POISON_EXCERPT_BYTES: usize = 64 * 1024;

/// A row of `events`; field order is the column order of the INSERT.
#[derive(Debug, Clone, Row, Serialize)]
pub struct EventRow {
    pub event_id: String,
    /// The producer's idempotency key, empty when it sent none.
    pub item_id: String,
    pub scope: String,
    pub event_type: String,
    pub session_id: String,
    pub profile_id: String,
    /// DateTime('UTC'): epoch seconds.
    pub event_time: u32,
    pub event_time_ms: u64,
    pub sent_at: Option<u32>,
    pub sent_at_ms: Option<u64>,
    pub received_at: u32,
    pub received_at_ms: u64,
    pub properties: String,
    pub source_id: String,
    pub source_type: String,
    pub target_id: String,
    pub target_type: String,
    pub kafka_partition: u32,
    pub kafka_offset: u64,
    /// Version of the event schema the event was validated against.
    pub schema_version: u32,
    /// Profile properties the event sets, names and JSON values pairwise.
    pub profile_property_names: Vec<String>,
    pub profile_property_values: Vec<String>,
    /// When the event happened by the server's clock (`corrected_time_ms`).
    pub corrected_time: u32,
    pub corrected_time_ms: u64,
    pub client_ip: String,
    pub user_agent: String,
    pub origin: String,
    pub referer: String,
    /// The event's `context` object as sent ('' when it had none).
    pub context: String,
    /// The source's policy the event was ingested under
    /// ([`proto::config::EventPolicy::label`]): `reject/trim`, `accept/keep`, …
    pub policy: String,
    /// When a replay job sent this event (epoch ms); 0 when not replayed.
    pub replayed_at_ms: u64,
    /// When the rejection a replay stored as accepted was stored (epoch ms).
    pub rejected_at_ms: u64,
    /// The replay job, '' when not replayed.
    pub replay_job: String,
    /// Where the record sits in Kafka (not a column): what the batch commits,
    /// drops on a revoke and looks up as stored. The same as the row's
    /// identity except for a replay.
    #[serde(skip)]
    pub record: Position,
}

/// The columns of an [`EventRow`] the profile views read: a row of the Null
/// table `profile_feed` (see [`crate::profiles`]), borrowed, never copied.
#[derive(Debug, Row, Serialize)]
pub struct FeedRow<'a> {
    pub event_id: &'a str,
    pub scope: &'a str,
    pub session_id: &'a str,
    pub profile_id: &'a str,
    /// The corrected time: profiles order by when events happened by the
    /// server's clock, so a device whose clock runs ahead cannot own a
    /// profile's latest values.
    pub event_time_ms: u64,
    pub kafka_partition: u32,
    pub kafka_offset: u64,
    pub profile_property_names: &'a [String],
    pub profile_property_values: &'a [String],
}

impl EventRow {
    pub fn feed(&self) -> FeedRow<'_> {
        FeedRow {
            event_id: &self.event_id,
            scope: &self.scope,
            session_id: &self.session_id,
            profile_id: &self.profile_id,
            event_time_ms: self.corrected_time_ms,
            kafka_partition: self.kafka_partition,
            kafka_offset: self.kafka_offset,
            profile_property_names: &self.profile_property_names,
            profile_property_values: &self.profile_property_values,
        }
    }
}

/// A row of `rejected_events`.
#[derive(Debug, Clone, Row, Serialize)]
pub struct RejectedRow {
    pub event_id: String,
    pub scope: String,
    pub event_type: String,
    pub session_id: String,
    pub profile_id: String,
    /// The event's timeStamp when readable, else 0 (1970-01-01).
    pub event_time: u32,
    pub event_time_ms: u64,
    pub received_at: u32,
    pub received_at_ms: u64,
    /// `gateway` (refused at ingest) or `worker` (rejected here).
    pub stage: String,
    /// JSON array of `{code, path, message}`.
    pub reasons: String,
    pub raw: String,
    pub kafka_partition: u32,
    pub kafka_offset: u64,
    pub client_ip: String,
    pub user_agent: String,
    pub origin: String,
    pub referer: String,
    /// As in [`EventRow::policy`]; '' for a record that is not an envelope.
    pub policy: String,
    /// As in [`EventRow`]: a replay rejected again.
    pub replayed_at_ms: u64,
    pub replay_job: String,
    #[serde(skip)]
    pub record: Position,
}

#[derive(Debug)]
pub enum Decoded {
    Accepted(EventRow),
    Rejected(RejectedRow),
    /// Not a Powehi envelope at all; stored in `rejected_events` like a rejection.
    Poison(RejectedRow),
}

/// Whether a decoded record belongs to a suppressed profile (by its
/// `profileId`, or its session's anonymous profile; a rejection's profile id
/// is the `profileId` as sent, empty without one): such records are dropped,
/// never stored. Undecodable records name nobody.
pub fn is_suppressed(decoded: &Decoded, config: &ConfigSnapshot) -> bool {
    let (scope, session_id, profile_id) = match decoded {
        Decoded::Accepted(row) => (&row.scope, &row.session_id, &row.profile_id),
        Decoded::Rejected(row) => (&row.scope, &row.session_id, &row.profile_id),
        Decoded::Poison(_) => return false,
    };
    let profile_id = Some(profile_id.as_str()).filter(|id| !id.is_empty());
    config.is_suppressed(scope, session_id, profile_id)
}

/// Where a record sits in Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// The config-log position a record's event must be validated at (see
/// [`Envelope::config_position`]); `None` for records that carry none or are
/// not envelopes. Reads only that field.
pub fn config_position(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Stamp {
        cfg: Option<i64>,
    }
    serde_json::from_slice::<Stamp>(payload).ok()?.cfg
}

/// Decodes a record and validates its event against the schema of its type
/// as of the config-log position the gateway stamped on the record
/// ([`ConfigSnapshot::schema_as_of`]): the newest version the gateway had
/// applied when it accepted the event. The pipeline has made sure `config`
/// reaches that position. `record_ms` is the Kafka record's timestamp.
///
/// The row therefore depends only on the record (and, for a record without a
/// stamp, written by a gateway older than stamps, on the latest schema): two
/// workers that decode one record at different times, with a schema change in
/// between, store the same row, which the tables collapse (see
/// [`crate::replay`]).
pub fn decode(
    payload: &[u8],
    position: Position,
    record_ms: i64,
    config: &ConfigSnapshot,
) -> Decoded {
    let envelope = match Envelope::from_bytes(payload) {
        Err(problem) => return Decoded::Poison(poison_row(payload, problem, position, record_ms)),
        Ok(envelope) => envelope,
    };
    let mut decoded = decode_envelope(&envelope, identity(&envelope, position), config);
    match &mut decoded {
        Decoded::Accepted(row) => row.record = position,
        Decoded::Rejected(row) | Decoded::Poison(row) => row.record = position,
    }
    decoded
}

/// The position a record's rows are stored under: the record's own, or for
/// a replay the rejected record's (see [`crate::replay`]).
fn identity(envelope: &Envelope<'_>, record: Position) -> Position {
    match &envelope.replay {
        None => record,
        Some(marker) => Position {
            partition: i32::try_from(marker.partition).unwrap_or(i32::MAX),
            offset: i64::try_from(marker.offset).unwrap_or(i64::MAX),
        },
    }
}

fn decode_envelope(
    envelope: &Envelope<'_>,
    position: Position,
    config: &ConfigSnapshot,
) -> Decoded {
    if !envelope.refusals.is_empty() {
        let refusals = envelope.refusals.clone();
        return Decoded::Rejected(rejected_row(envelope, "gateway", &refusals, position));
    }
    let fields = match check_event(envelope.event, &envelope.scope) {
        Ok(fields) => fields,
        Err(reason) => {
            return Decoded::Rejected(rejected_row(envelope, "worker", &[reason], position))
        }
    };
    let schema = config.schema_as_of(&fields.event_type, envelope.config_position);
    match validate_under(envelope.policy, schema.map(|s| &s.schema), &fields) {
        Ok(validated) => {
            let version = schema.map_or(0, |s| s.version);
            Decoded::Accepted(event_row(envelope, &fields, validated, version, position))
        }
        Err(reasons) => Decoded::Rejected(rejected_row(envelope, "worker", &reasons, position)),
    }
}

fn event_row(
    envelope: &Envelope<'_>,
    fields: &EventFields<'_>,
    validated: Validated,
    schema_version: u32,
    position: Position,
) -> EventRow {
    let received_at_ms = clamp_ms(envelope.received_at_ms);
    let corrected_ms = corrected_time_ms(
        fields.time_stamp.timestamp_millis(),
        fields.send_at.map(|t| t.timestamp_millis()),
        envelope.received_at_ms,
    );
    let context = &envelope.context;
    let (source_id, source_type) = item_columns(fields.source.as_ref());
    let (target_id, target_type) = item_columns(fields.target.as_ref());
    EventRow {
        event_id: envelope.id.to_string(),
        item_id: fields.item_id.as_deref().unwrap_or("").to_string(),
        scope: envelope.scope.to_string(),
        event_type: fields.event_type.to_string(),
        session_id: fields.session_id.to_string(),
        profile_id: profile_of(
            &envelope.scope,
            &fields.session_id,
            fields.profile_id.as_deref(),
        ),
        event_time: seconds(fields.time_stamp.timestamp_millis()),
        event_time_ms: clamp_ms(fields.time_stamp.timestamp_millis()),
        sent_at: fields.send_at.map(|t| seconds(t.timestamp_millis())),
        sent_at_ms: fields.send_at.map(|t| clamp_ms(t.timestamp_millis())),
        received_at: (received_at_ms / 1000) as u32,
        received_at_ms,
        properties: validated.properties,
        source_id,
        source_type,
        target_id,
        target_type,
        kafka_partition: position.partition.max(0) as u32,
        kafka_offset: position.offset.max(0) as u64,
        schema_version,
        profile_property_names: validated
            .profile_updates
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        profile_property_values: validated
            .profile_updates
            .into_iter()
            .map(|(_, value)| value)
            .collect(),
        corrected_time: seconds(corrected_ms),
        corrected_time_ms: clamp_ms(corrected_ms),
        client_ip: context.ip.to_string(),
        user_agent: context.user_agent.to_string(),
        origin: context.origin.to_string(),
        referer: context.referer.to_string(),
        context: fields
            .context
            .map_or_else(String::new, |raw| raw.get().to_string()),
        policy: envelope.policy.label().to_string(),
        replayed_at_ms: envelope.replay.as_ref().map_or(0, |m| m.replayed_at_ms),
        rejected_at_ms: envelope.replay.as_ref().map_or(0, |m| m.rejected_at_ms),
        replay_job: envelope
            .replay
            .as_ref()
            .map_or_else(String::new, |m| m.job.clone()),
        record: position,
    }
}

fn rejected_row(
    envelope: &Envelope<'_>,
    stage: &str,
    reasons: &[Reason],
    position: Position,
) -> RejectedRow {
    let ids = best_effort_ids(envelope.event);
    let received_at_ms = clamp_ms(envelope.received_at_ms);
    RejectedRow {
        event_id: envelope.id.to_string(),
        scope: envelope.scope.to_string(),
        event_type: ids.event_type,
        session_id: ids.session_id,
        profile_id: ids.profile_id,
        event_time: ids
            .time_stamp
            .map(|t| seconds(t.timestamp_millis()))
            .unwrap_or(0),
        event_time_ms: ids
            .time_stamp
            .map(|t| clamp_ms(t.timestamp_millis()))
            .unwrap_or(0),
        received_at: (received_at_ms / 1000) as u32,
        received_at_ms,
        stage: stage.to_string(),
        reasons: serde_json::to_string(reasons).unwrap_or_else(|_| "[]".into()),
        raw: envelope.event.get().to_string(),
        kafka_partition: position.partition.max(0) as u32,
        kafka_offset: position.offset.max(0) as u64,
        client_ip: envelope.context.ip.to_string(),
        user_agent: envelope.context.user_agent.to_string(),
        origin: envelope.context.origin.to_string(),
        referer: envelope.context.referer.to_string(),
        policy: envelope.policy.label().to_string(),
        replayed_at_ms: envelope.replay.as_ref().map_or(0, |m| m.replayed_at_ms),
        replay_job: envelope
            .replay
            .as_ref()
            .map_or_else(String::new, |m| m.job.clone()),
        record: position,
    }
}

/// A record that is not a Powehi envelope: stored with what little is known,
/// received at the Kafka record's timestamp (not the clock: a second decode
/// must give the same row).
fn poison_row(payload: &[u8], problem: String, position: Position, record_ms: i64) -> RejectedRow {
    let now_ms = clamp_ms(record_ms);
    let excerpt = &payload[..payload.len().min(POISON_EXCERPT_BYTES)];
    let reason = Reason::new(ReasonCode::UndecodableRecord, "$", problem);
    RejectedRow {
        event_id: format!("kafka-{}-{}", position.partition, position.offset),
        scope: String::new(),
        event_type: String::new(),
        session_id: String::new(),
        profile_id: String::new(),
        event_time: 0,
        event_time_ms: 0,
        received_at: (now_ms / 1000) as u32,
        received_at_ms: now_ms,
        stage: "worker".to_string(),
        reasons: serde_json::to_string(&[reason]).unwrap_or_else(|_| "[]".into()),
        raw: String::from_utf8_lossy(excerpt).into_owned(),
        kafka_partition: position.partition.max(0) as u32,
        kafka_offset: position.offset.max(0) as u64,
        client_ip: String::new(),
        user_agent: String::new(),
        origin: String::new(),
        referer: String::new(),
        policy: String::new(),
        replayed_at_ms: 0,
        replay_job: String::new(),
        record: position,
    }
}

fn item_columns(item: Option<&proto::ItemRef<'_>>) -> (String, String) {
    item.map(|i| (i.item_id.to_string(), i.item_type.to_string()))
        .unwrap_or_default()
}

fn clamp_ms(ms: i64) -> u64 {
    ms.max(0) as u64
}

/// Epoch seconds for a ClickHouse DateTime; times were range-checked on parse.
fn seconds(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSITION: Position = Position {
        partition: 3,
        offset: 42,
    };

    /// A config with schema `view` v2: `a` (integer, sets profile property
    /// `lastA`) declared, source required.
    fn config() -> ConfigSnapshot {
        let record = br#"{"kind":"eventSchema","version":2,"schema":{"eventType":"view","sourceRequired":true,
            "properties":[{"name":"a","type":"integer","required":true,"profileProperty":"lastA"}]}}"#;
        let mut snapshot = ConfigSnapshot::default();
        let _ = snapshot.apply(&proto::config::schema_key("view", 2), Some(record));
        snapshot
    }

    fn decode(payload: &[u8], position: Position) -> Decoded {
        super::decode(payload, position, 1_700_000_000_999, &config())
    }

    fn envelope(event: &str, refusals: &str) -> Vec<u8> {
        format!(r#"{{"v":1,"id":"e1","scope":"demo","receivedAt":1700000000123,{refusals}"event":{event}}}"#).into_bytes()
    }

    #[test]
    fn records_of_a_suppressed_profile_or_of_its_merged_sessions_are_suppressed() {
        let mut suppressions = ConfigSnapshot::default();
        let record = br#"{"kind":"suppression","profileId":"alice","mergedIds":["anon:demo:s"]}"#;
        let applied = suppressions.apply(&proto::config::suppression_key("alice"), Some(record));
        assert_eq!(applied, Ok(()));
        let event = |session: &str, profile: &str, event_type: &str| {
            let profile = if profile.is_empty() {
                String::new()
            } else {
                format!(r#","profileId":"{profile}""#)
            };
            let text = format!(
                r#"{{"eventType":"{event_type}","sessionId":"{session}","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"{profile}}}"#
            );
            decode(&envelope(&text, ""), POSITION)
        };
        let suppressed = |decoded: Decoded| is_suppressed(&decoded, &suppressions);
        assert!(
            suppressed(event("s", "", "view")),
            "a merged session, anonymous"
        );
        assert!(
            suppressed(event("t", "alice", "view")),
            "naming the profile"
        );
        assert!(
            suppressed(event("t", "alice", "nope")),
            "rejected, naming it"
        );
        assert!(
            suppressed(event("s", "", "nope")),
            "rejected, in a merged session"
        );
        assert!(!suppressed(event("t", "", "view")));
        assert!(!suppressed(event("t", "bob", "nope")));
    }

    #[test]
    fn the_verdict_is_the_schema_as_of_the_stamp_whenever_it_is_decoded() {
        // v1 (nothing required) at offset 0, v2 (`a` required) at offset 1.
        let v1 =
            br#"{"kind":"eventSchema","version":1,"schema":{"eventType":"view","properties":[]}}"#;
        let v2 = br#"{"kind":"eventSchema","version":2,"schema":{"eventType":"view",
            "properties":[{"name":"a","type":"integer","required":true}]}}"#;
        let mut before = ConfigSnapshot::default();
        let _ = before.apply_at(0, &proto::config::schema_key("view", 1), Some(v1));
        let mut after = before.clone();
        let _ = after.apply_at(1, &proto::config::schema_key("view", 2), Some(v2));
        let event = r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#;
        let stamped = |cfg: i64| envelope(event, &format!(r#""cfg":{cfg},"#));
        for config in [&before, &after] {
            let Decoded::Accepted(row) = super::decode(&stamped(1), POSITION, 0, config) else {
                panic!("stamped before v2: judged by v1, by a worker that knows v2 too")
            };
            assert_eq!(row.schema_version, 1);
        }
        assert!(matches!(
            super::decode(&stamped(2), POSITION, 0, &after),
            Decoded::Rejected(_)
        ));
    }

    #[test]
    fn the_row_keeps_the_corrected_time_and_the_request_context() {
        // Received at 1700000000.123; the device clock runs an hour ahead.
        let event = r#"{"eventType":"view","sessionId":"s","scope":"demo","source":{"itemId":"i","itemType":"t"},
            "properties":{"a":1},"timeStamp":"2023-11-14T23:13:15Z","sendAt":"2023-11-14T23:13:20.123Z"}"#;
        let context =
            r#""ctx":{"ip":"203.0.113.9","ua":"Agent/1","origin":"https://shop.example"},"#;
        let Decoded::Accepted(row) = decode(&envelope(event, context), POSITION) else {
            panic!("accepted")
        };
        assert_eq!(
            row.event_time_ms, 1_700_003_595_000,
            "the timeStamp as sent"
        );
        assert_eq!(row.corrected_time_ms, 1_700_000_000_123 - 5_123);
        assert_eq!(
            row.feed().event_time_ms,
            row.corrected_time_ms,
            "profiles order by it"
        );
        assert_eq!(row.corrected_time, 1_699_999_995);
        assert_eq!(
            (
                row.client_ip.as_str(),
                row.user_agent.as_str(),
                row.origin.as_str(),
                row.referer.as_str()
            ),
            ("203.0.113.9", "Agent/1", "https://shop.example", "")
        );
        let Decoded::Rejected(rejected) =
            decode(&envelope(r#"{"eventType":"view"}"#, context), POSITION)
        else {
            panic!("rejected")
        };
        assert_eq!(rejected.origin, "https://shop.example");
    }

    #[test]
    fn accepted_event_keeps_utc_times_with_milliseconds() {
        let event = r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00.250+07:00",
            "properties":{ "a" : 1, "undeclared": true },"source":{"itemId":"_","itemType":"_"}}"#;
        let Decoded::Accepted(row) = decode(&envelope(event, ""), POSITION) else {
            panic!("must be accepted")
        };
        assert_eq!(row.event_time, 1_634_298_540);
        assert_eq!(row.event_time_ms, 1_634_298_540_250);
        assert_eq!(row.received_at_ms, 1_700_000_000_123);
        assert_eq!(
            row.properties, r#"{"a":1}"#,
            "undeclared properties are trimmed"
        );
        assert_eq!(row.schema_version, 2);
        assert_eq!(
            row.profile_id, "anon:demo:s",
            "no profileId: the session's anonymous profile"
        );
        assert_eq!(
            (
                row.profile_property_names.clone(),
                row.profile_property_values.clone()
            ),
            (vec!["lastA".to_string()], vec!["1".to_string()])
        );
        assert_eq!((row.source_id.as_str(), row.target_id.as_str()), ("_", ""));
        assert_eq!((row.kafka_partition, row.kafka_offset), (3, 42));
    }

    #[test]
    fn gateway_refusal_becomes_a_rejected_row_with_its_reasons() {
        let refusals = r#""refusals":[{"code":"scope_mismatch","path":"$.scope","message":"m"}],"#;
        let event = r#"{"eventType":"view","sessionId":"s","scope":"other","timeStamp":"2021-10-15T18:49:00Z"}"#;
        let Decoded::Rejected(row) = decode(&envelope(event, refusals), POSITION) else {
            panic!("must be rejected")
        };
        assert_eq!(row.stage, "gateway");
        assert!(
            row.reasons.contains("\"scope_mismatch\""),
            "{}",
            row.reasons
        );
        assert_eq!((row.event_type.as_str(), row.raw.as_str()), ("view", event));
    }

    #[test]
    fn schema_violations_are_rejected_with_every_reason() {
        let event = r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","properties":{"a":"x"}}"#;
        let Decoded::Rejected(row) = decode(&envelope(event, ""), POSITION) else {
            panic!("must be rejected")
        };
        assert_eq!(row.stage, "worker");
        assert!(
            row.reasons.contains("\"wrong_type\"") && row.reasons.contains("\"missing_source\""),
            "{}",
            row.reasons
        );
        let unknown = r#"{"eventType":"click","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#;
        let Decoded::Rejected(row) = decode(&envelope(unknown, ""), POSITION) else {
            panic!("must be rejected")
        };
        assert!(
            row.reasons.contains("unknown_event_type"),
            "{}",
            row.reasons
        );
    }

    #[test]
    fn poison_record_is_rejected_not_retried() {
        let Decoded::Poison(row) = decode(b"not json", POSITION) else {
            panic!("must be poison")
        };
        assert_eq!(
            (row.stage.as_str(), row.raw.as_str()),
            ("worker", "not json")
        );
        assert!(row.reasons.contains("undecodable_record"));
        assert_eq!(row.event_id, "kafka-3-42");
        assert_eq!(
            row.received_at_ms, 1_700_000_000_999,
            "the record's time, so a second decode gives the same row"
        );
    }

    #[test]
    fn a_replay_is_stored_under_the_rejected_records_identity() {
        let event = r#"{"eventType":"view","sessionId":"s","scope":"demo","source":{"itemId":"i","itemType":"t"},
            "properties":{"a":1},"timeStamp":"2021-10-15T18:49:00Z"}"#;
        let replay = |job: &str| {
            format!(
                r#""replay":{{"job":"{job}","partition":1,"offset":7,"rejectedAt":5000,"replayedAt":9000}},"#
            )
        };
        let first = Position {
            partition: 3,
            offset: 100,
        };
        let again = Position {
            partition: 4,
            offset: 555,
        };
        let Decoded::Accepted(row) = decode(&envelope(event, &replay("j1")), first) else {
            panic!("accepted")
        };
        let Decoded::Accepted(second) = decode(&envelope(event, &replay("j2")), again) else {
            panic!("accepted")
        };
        for row in [&row, &second] {
            assert_eq!(
                (row.kafka_partition, row.kafka_offset),
                (1, 7),
                "the rejected record's"
            );
            assert_eq!(
                (row.event_id.as_str(), row.received_at_ms),
                ("e1", 1_700_000_000_123)
            );
            assert_eq!((row.replayed_at_ms, row.rejected_at_ms), (9_000, 5_000));
        }
        assert_eq!(
            (row.record, second.record),
            (first, again),
            "the records' own"
        );
        assert_eq!(row.replay_job, "j1");
        let invalid = r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#;
        let Decoded::Rejected(row) = decode(&envelope(invalid, &replay("j3")), first) else {
            panic!("still invalid")
        };
        assert_eq!(
            (row.kafka_partition, row.kafka_offset, row.record),
            (1, 7, first)
        );
        assert_eq!((row.replay_job.as_str(), row.replayed_at_ms), ("j3", 9_000));
        assert!(row.reasons.contains("missing_property"), "{}", row.reasons);
    }

    #[test]
    fn the_config_stamp_is_read_from_the_envelope() {
        let event = r#"{"eventType":"view"}"#;
        let stamped = format!(
            r#"{{"v":1,"id":"e1","scope":"demo","receivedAt":1,"cfg":17,"event":{event}}}"#
        );
        assert_eq!(config_position(stamped.as_bytes()), Some(17));
        assert_eq!(config_position(&envelope(event, "")), None);
        assert_eq!(config_position(b"not json"), None);
    }
}
