//! Realistic events, like the reference example, and what Powehi makes of them.
//!
//! A few registered event types with a handful of properties each, weighted like
//! a web site's traffic (mostly views), with varied text sizes, a pool of
//! sessions (some numeric, as when the reference's `${CLIENT_UNIQUE_SESSION_ID}`
//! is interpolated unquoted), some identified profiles, some `sendAt`, and now
//! and then an undeclared property the worker trims. [`schemas`] registers
//! exactly these types, so every generated event is valid: the benchmark
//! measures the accepted path. Deterministic from a seed.
//!
//! The Kafka records and ClickHouse rows of the baselines are built from the same
//! events with the gateway's and the worker's own functions (`proto`), so the
//! baselines write exactly what the pipeline writes.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use proto::config::{Bootstrap, DataSourceSpec, EventSchemaSpec, PropertySpec, PropertyType};
use proto::topics::record_key;
use proto::Envelope;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::rng::Rng;

/// A declared property and how to make up a value for it.
struct Prop {
    name: &'static str,
    kind: PropertyType,
    required: bool,
    /// Longest generated text (strings only).
    max_len: usize,
    profile_property: Option<&'static str>,
}

struct EventKind {
    name: &'static str,
    /// Share of the traffic, in percent (the weights add up to 100).
    weight: u64,
    props: &'static [Prop],
}

const fn prop(name: &'static str, kind: PropertyType, required: bool, max_len: usize) -> Prop {
    Prop {
        name,
        kind,
        required,
        max_len,
        profile_property: None,
    }
}

use PropertyType::{Integer, Number, String as Text};

const KINDS: &[EventKind] = &[
    EventKind {
        name: "view",
        weight: 60,
        props: &[
            prop("url", Text, false, 200),
            prop("title", Text, false, 120),
            prop("referrer", Text, false, 200),
        ],
    },
    EventKind {
        name: "click",
        weight: 25,
        props: &[
            prop("element", Text, true, 40),
            prop("x", Integer, false, 0),
            prop("y", Integer, false, 0),
        ],
    },
    EventKind {
        name: "search",
        weight: 10,
        props: &[
            prop("query", Text, true, 60),
            prop("results", Integer, false, 0),
        ],
    },
    EventKind {
        name: "purchase",
        weight: 5,
        props: &[
            prop("sku", Text, true, 16),
            prop("qty", Integer, true, 0),
            prop("price", Number, true, 0),
            prop("currency", Text, false, 3),
            Prop {
                name: "email",
                kind: Text,
                required: false,
                max_len: 30,
                profile_property: Some("email"),
            },
        ],
    },
];

/// The event schemas of the generated types (for the bootstrap file).
pub fn schemas() -> Vec<EventSchemaSpec> {
    KINDS
        .iter()
        .map(|kind| EventSchemaSpec {
            event_type: kind.name.to_string(),
            properties: kind
                .props
                .iter()
                .map(|p| PropertySpec {
                    name: p.name.to_string(),
                    kind: p.kind,
                    required: p.required,
                    profile_property: p.profile_property.map(str::to_string),
                })
                .collect(),
            source_required: false,
            target_required: false,
        })
        .collect()
}

/// A bootstrap file (`POWEHI_BOOTSTRAP`) with one unlimited data source per
/// `(id, write key)` and the schemas of the generated types.
pub fn bootstrap(sources: &[(String, String)]) -> Bootstrap {
    Bootstrap {
        data_sources: sources
            .iter()
            .map(|(id, key)| DataSourceSpec {
                id: id.clone(),
                name: format!("benchmark {id}"),
                write_keys: vec![key.clone()],
                write_key_hashes: Vec::new(),
                enabled: true,
                max_events_per_second: None,
                identity_secret: None,
                allowed_origins: None,
                unplanned_events: None,
                undeclared_properties: None,
            })
            .collect(),
        event_schemas: schemas(),
    }
}

/// Makes up events for one data source.
pub struct EventGen {
    rng: Rng,
    scope: String,
    sessions: u64,
}

impl EventGen {
    pub fn new(scope: &str, sessions: u64, seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            scope: scope.to_string(),
            sessions: sessions.max(1),
        }
    }

    /// One event happening around `now_ms`; `item_id` is the producer's
    /// idempotency key (it becomes the event id).
    pub fn event(&mut self, now_ms: i64, item_id: Option<&str>) -> Value {
        let rng = &mut self.rng;
        let kind = pick_kind(rng.below(100));
        let session = rng.below(self.sessions);
        // A tenth of the sessions are numbers, as when interpolated unquoted.
        let session_id = if session % 10 == 0 {
            json!(session)
        } else {
            json!(format!("s-{session:08x}"))
        };
        let mut event = Map::new();
        event.insert("eventType".into(), json!(kind.name));
        event.insert("sessionId".into(), session_id);
        event.insert("properties".into(), Value::Object(properties(rng, kind)));
        event.insert("scope".into(), json!(self.scope));
        let happened = now_ms - rng.below(5_000) as i64;
        event.insert("timeStamp".into(), json!(iso(happened, rng.chance(20))));
        if rng.chance(30) {
            event.insert("sendAt".into(), json!(iso(now_ms, false)));
        }
        let site = rng.below(20);
        event.insert(
            "source".into(),
            json!({"itemId": format!("site-{site}"), "itemType": "site"}),
        );
        let target = match kind.name {
            "purchase" | "click" => {
                json!({"itemId": format!("product-{}", rng.below(5000)), "itemType": "product"})
            }
            _ => json!({"itemId": format!("page-{}", rng.below(2000)), "itemType": "page"}),
        };
        event.insert("target".into(), target);
        // Identified sessions: one in seven.
        if session % 7 == 0 {
            event.insert("profileId".into(), json!(format!("user-{}", session / 7)));
        }
        if let Some(id) = item_id {
            event.insert("itemId".into(), json!(id));
        }
        Value::Object(event)
    }

    /// A request body of `batch` events.
    pub fn body(&mut self, batch: usize, now_ms: i64) -> String {
        let events: Vec<Value> = (0..batch).map(|_| self.event(now_ms, None)).collect();
        json!({ "events": events }).to_string()
    }
}

fn pick_kind(percent: u64) -> &'static EventKind {
    let mut acc = 0;
    for kind in KINDS {
        acc += kind.weight;
        if percent < acc {
            return kind;
        }
    }
    &KINDS[0]
}

fn properties(rng: &mut Rng, kind: &EventKind) -> Map<String, Value> {
    let mut props = Map::new();
    for p in kind.props {
        if !p.required && !rng.chance(70) {
            continue;
        }
        let value = match p.kind {
            Integer => json!(rng.range(0, 2000)),
            Number => json!(rng.range(100, 100_000) as f64 / 100.0),
            _ if p.name == "email" => json!(format!("u{}@example.com", rng.below(100_000))),
            _ => {
                let len = rng.range(3, p.max_len as u64) as usize;
                json!(rng.text(len))
            }
        };
        props.insert(p.name.to_string(), value);
    }
    // Now and then an undeclared property, up to 2 KiB, that the worker trims.
    if rng.chance(5) {
        let len = rng.range(200, 2048) as usize;
        props.insert("debug".into(), json!(rng.text(len)));
    }
    props
}

/// ISO 8601 with milliseconds, in UTC or at +07:00 like the reference example.
fn iso(ms: i64, plus_seven: bool) -> String {
    let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    match FixedOffset::east_opt(7 * 3600).filter(|_| plus_seven) {
        Some(offset) => utc
            .with_timezone(&offset)
            .to_rfc3339_opts(SecondsFormat::Millis, false),
        None => utc.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// The Kafka record (key, payload) the gateway writes for an accepted `event`
/// (JSON text) of `scope`: the same key and envelope, built by the same code.
pub fn kafka_record(
    scope: &str,
    event: &str,
    received_at_ms: i64,
) -> anyhow::Result<(String, Vec<u8>)> {
    let raw: Box<RawValue> = serde_json::from_str(event)?;
    let fields = proto::check_event(&raw, scope)
        .map_err(|reason| anyhow::anyhow!("generated event refused: {}", reason.message))?;
    let id = match &fields.item_id {
        Some(id) => id.clone(),
        None => Cow::Owned(uuid::Uuid::now_v7().to_string()),
    };
    let key = record_key(scope, &fields.session_id);
    let payload = Envelope::new(id, scope, received_at_ms, &raw).to_bytes();
    Ok((key, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::schema::validate_event;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn weights_cover_every_percent() {
        assert_eq!(KINDS.iter().map(|k| k.weight).sum::<u64>(), 100);
        assert_eq!(pick_kind(0).name, "view");
        assert_eq!(pick_kind(99).name, "purchase");
    }

    #[test]
    fn generated_events_pass_the_gateway_and_their_schema() {
        let schemas = schemas();
        for schema in &schemas {
            assert!(
                proto::schema::check_definition(schema).is_ok(),
                "{schema:?}"
            );
        }
        let mut gen = EventGen::new("bench", 1000, 42);
        let mut types = std::collections::BTreeSet::new();
        for i in 0..2000 {
            let text = gen.event(NOW, Some(&format!("id-{i}"))).to_string();
            let raw: Box<RawValue> = serde_json::from_str(&text).expect("json");
            let fields = proto::check_event(&raw, "bench").expect("envelope checks");
            assert_eq!(fields.item_id.as_deref(), Some(format!("id-{i}").as_str()));
            let schema = schemas.iter().find(|s| s.event_type == fields.event_type);
            assert!(validate_event(schema, &fields).is_ok(), "{text}");
            types.insert(fields.event_type.to_string());
        }
        assert_eq!(types.len(), KINDS.len(), "every type shows up");
    }

    #[test]
    fn sizes_and_sessions_vary_and_the_seed_decides() {
        let mut gen = EventGen::new("bench", 50, 1);
        let sizes: Vec<usize> = (0..500)
            .map(|_| gen.event(NOW, None).to_string().len())
            .collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(min < Some(&250) && max > Some(&1000), "{min:?}..{max:?}");
        let body = gen.body(10, NOW);
        let parsed: Value = serde_json::from_str(&body).expect("body");
        assert_eq!(parsed["events"].as_array().map(Vec::len), Some(10));
        let again = EventGen::new("bench", 50, 1).event(NOW, None);
        assert_eq!(EventGen::new("bench", 50, 1).event(NOW, None), again);
    }

    #[test]
    fn kafka_records_are_gateway_envelopes_keyed_by_session() {
        let event = r#"{"eventType":"view","sessionId":12345,"properties":{},"scope":"bench",
            "timeStamp":"2021-10-15T18:49:00+07:00","itemId":"e-1"}"#;
        let (key, payload) = kafka_record("bench", event, NOW).expect("record");
        assert_eq!(key, record_key("bench", "12345"));
        let envelope = Envelope::from_bytes(&payload).expect("envelope");
        assert_eq!(envelope.id, "e-1");
        assert_eq!(envelope.received_at_ms, NOW);
        assert_eq!(envelope.event.get(), event);
    }

    #[test]
    fn bootstrap_declares_sources_and_every_type() {
        let b = bootstrap(&[("bench".into(), "key".into())]);
        let text = serde_json::to_string(&b).expect("json");
        let back: Bootstrap = serde_json::from_str(&text).expect("parses as a bootstrap file");
        assert_eq!(back.data_sources[0].write_keys, vec!["key".to_string()]);
        assert_eq!(back.event_schemas.len(), KINDS.len());
    }
}
