//! Event schemas: checking a schema definition, and validating an event against it.
//!
//! Validation collects every problem of an event (not only the first), each as a
//! [`Reason`] with a JSON path, and on success returns the event's properties
//! trimmed to the declared ones. The worker records exactly these reasons, and
//! the admin API's `validate` endpoint answers exactly these reasons, because
//! both call [`validate_event`].
//!
//! A data source's [`EventPolicy`] may relax the two rules of the reference
//! document ([`validate_under`]): an event type without a schema is then
//! accepted untyped, with its properties as sent, and properties a schema does
//! not declare are kept beside the checked ones. Declared properties are
//! checked either way.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::config::{
    EventPolicy, EventSchemaSpec, PropertySpec, PropertyType, UndeclaredProperties, UnplannedEvents,
};
use crate::event::EventFields;
use crate::reason::{Reason, ReasonCode};
use crate::time::parse_iso8601;

/// Longest event type, property or profile-property name.
pub const MAX_NAME_LEN: usize = 128;
/// Most properties one schema may declare.
pub const MAX_PROPERTIES: usize = 512;

/// An event's properties after validation: only the declared ones, as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub properties: String,
    /// Profile properties this event sets (schema `profileProperty` mappings),
    /// each as (profile property name, JSON text of the value).
    pub profile_updates: Vec<(String, String)>,
}

/// Checks an event against its schema (`None`: no schema for its type), by
/// the reference document's rules (the default policy).
pub fn validate_event(
    schema: Option<&EventSchemaSpec>,
    event: &EventFields<'_>,
) -> Result<Validated, Vec<Reason>> {
    validate_under(EventPolicy::default(), schema, event)
}

/// Checks an event against its schema under its data source's policy.
pub fn validate_under(
    policy: EventPolicy,
    schema: Option<&EventSchemaSpec>,
    event: &EventFields<'_>,
) -> Result<Validated, Vec<Reason>> {
    let properties: Map<String, Value> = match event.properties {
        None => Map::new(),
        Some(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
    };
    let Some(schema) = schema else {
        if policy.unplanned_events == UnplannedEvents::Accept {
            return Ok(Validated {
                properties: Value::Object(properties).to_string(),
                profile_updates: Vec::new(),
            });
        }
        return Err(vec![Reason::new(
            ReasonCode::UnknownEventType,
            "$.eventType",
            format!(
                "event type {:?} has no registered event schema",
                event.event_type
            ),
        )]);
    };
    let mut reasons = Vec::new();
    let mut kept = match policy.undeclared_properties {
        UndeclaredProperties::Trim => Map::new(),
        UndeclaredProperties::Keep => properties.clone(),
    };
    let mut profile_updates = Vec::new();
    for spec in &schema.properties {
        match properties.get(&spec.name).filter(|v| !v.is_null()) {
            None if spec.required => reasons.push(Reason::new(
                ReasonCode::MissingProperty,
                property_path(&spec.name),
                format!(
                    "property {:?} is required ({})",
                    spec.name,
                    type_name(spec.kind)
                ),
            )),
            None => {}
            Some(value) if !has_type(value, spec.kind) => reasons.push(Reason::new(
                ReasonCode::WrongType,
                property_path(&spec.name),
                format!(
                    "property {:?} must be {}, got {}",
                    spec.name,
                    type_name(spec.kind),
                    describe(value)
                ),
            )),
            Some(value) => {
                if let Some(target) = &spec.profile_property {
                    profile_updates.push((target.clone(), value.to_string()));
                }
                kept.insert(spec.name.clone(), value.clone());
            }
        }
    }
    if schema.source_required && event.source.is_none() {
        reasons.push(Reason::new(
            ReasonCode::MissingSource,
            "$.source",
            format!(
                "events of type {:?} need a source {{itemId, itemType}}",
                schema.event_type
            ),
        ));
    }
    if schema.target_required && event.target.is_none() {
        reasons.push(Reason::new(
            ReasonCode::MissingTarget,
            "$.target",
            format!(
                "events of type {:?} need a target {{itemId, itemType}}",
                schema.event_type
            ),
        ));
    }
    if reasons.is_empty() {
        Ok(Validated {
            properties: Value::Object(kept).to_string(),
            profile_updates,
        })
    } else {
        Err(reasons)
    }
}

/// Checks a schema definition; `Err` names the first problem.
pub fn check_definition(schema: &EventSchemaSpec) -> Result<(), String> {
    check_event_type(&schema.event_type)?;
    if schema.properties.len() > MAX_PROPERTIES {
        return Err(format!(
            "a schema declares at most {MAX_PROPERTIES} properties"
        ));
    }
    let mut seen = HashSet::new();
    for PropertySpec {
        name,
        profile_property,
        ..
    } in &schema.properties
    {
        check_name("property name", name, is_property_char)?;
        if !seen.insert(name.as_str()) {
            return Err(format!("property {name:?} is declared twice"));
        }
        if let Some(target) = profile_property {
            check_name("profileProperty", target, is_property_char)?;
        }
    }
    Ok(())
}

/// Event types are named as people write them ("Order Completed", "Signed
/// Up", `page_view`, `checkout:step-2`): text of 1 to [`MAX_NAME_LEN`] bytes
/// whose only white space is single ASCII spaces between words, so two names
/// that look alike are alike. Refused: control and invisible format
/// characters (zero-width, bidi), other white space (tabs, no-break spaces),
/// and `.` and `..`, which clients remove from URL paths. The name travels in
/// config-log keys, logs and URL paths (percent-encoded).
pub fn check_event_type(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "eventType {name:?} must be 1 to {MAX_NAME_LEN} bytes"
        ));
    }
    if name.trim() != name || name.contains("  ") {
        return Err(format!(
            "eventType {name:?} must not start or end with white space or hold two spaces in a row"
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || is_invisible(c) || (c.is_whitespace() && c != ' '))
    {
        return Err(format!(
            "eventType {name:?} must not contain control characters, invisible characters or \
             white space other than spaces"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("eventType {name:?} cannot be named in a URL path"));
    }
    Ok(())
}

/// Unicode format characters (category Cf) a name could hide: zero-width
/// spaces and joiners, bidi controls, the BOM, soft hyphen.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

fn check_name(what: &str, name: &str, allowed: fn(char) -> bool) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} {name:?} must be 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !name.chars().all(allowed)
    {
        return Err(format!(
            "{what} {name:?} must start with a letter or _ and contain only letters, digits, _ and -"
        ));
    }
    Ok(())
}

fn is_property_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

fn property_path(name: &str) -> String {
    format!("$.properties.{name}")
}

fn has_type(value: &Value, kind: PropertyType) -> bool {
    match kind {
        PropertyType::String => value.is_string(),
        PropertyType::Integer => value.is_i64() || value.is_u64(),
        PropertyType::Number => value.is_number(),
        PropertyType::Boolean => value.is_boolean(),
        PropertyType::Datetime => value.as_str().is_some_and(|t| parse_iso8601(t).is_ok()),
        PropertyType::Object => value.is_object(),
        PropertyType::Array => value.is_array(),
    }
}

fn type_name(kind: PropertyType) -> &'static str {
    match kind {
        PropertyType::String => "a string",
        PropertyType::Integer => "an integer",
        PropertyType::Number => "a number",
        PropertyType::Boolean => "a boolean",
        PropertyType::Datetime => "an ISO 8601 datetime string",
        PropertyType::Object => "an object",
        PropertyType::Array => "an array",
    }
}

fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    let cut = crate::text::prefix(&text, 40);
    let ellipsis = if cut.len() < text.len() { "…" } else { "" };
    format!("{kind} ({cut}{ellipsis})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::check_event;
    use serde_json::value::RawValue;

    fn schema(json: &str) -> EventSchemaSpec {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    fn run(
        schema: Option<&EventSchemaSpec>,
        event: &str,
    ) -> Result<String, Vec<(ReasonCode, String)>> {
        let raw =
            RawValue::from_string(event.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned());
        let fields = check_event(&raw, "demo").unwrap_or_else(|r| panic!("envelope: {r:?}"));
        validate_event(schema, &fields)
            .map(|v| v.properties)
            .map_err(|reasons| reasons.into_iter().map(|r| (r.code, r.path)).collect())
    }

    const PURCHASE: &str = r#"{"eventType":"purchase","sourceRequired":true,"properties":[
        {"name":"sku","type":"string","required":true},
        {"name":"qty","type":"integer","required":true},
        {"name":"price","type":"number"},
        {"name":"gift","type":"boolean"},
        {"name":"at","type":"datetime"},
        {"name":"meta","type":"object"},
        {"name":"tags","type":"array"}]}"#;

    fn event(properties: &str, extra: &str) -> String {
        format!(
            r#"{{"eventType":"purchase","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","properties":{properties}{extra}}}"#
        )
    }

    const SOURCE: &str = r#","source":{"itemId":"p","itemType":"page"}"#;

    #[test]
    fn valid_event_keeps_only_declared_properties() {
        let s = schema(PURCHASE);
        let out = run(
            Some(&s),
            &event(
                r#"{"sku":"A1","qty":2,"price":9.5,"at":"2021-10-15T18:49:00Z","tags":[1],"secret":"x"}"#,
                SOURCE,
            ),
        );
        assert_eq!(
            out,
            Ok(
                r#"{"at":"2021-10-15T18:49:00Z","price":9.5,"qty":2,"sku":"A1","tags":[1]}"#
                    .to_string()
            )
        );
    }

    fn run_under(
        policy: EventPolicy,
        schema: Option<&EventSchemaSpec>,
        event: &str,
    ) -> Result<String, Vec<ReasonCode>> {
        let raw =
            RawValue::from_string(event.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned());
        let fields = check_event(&raw, "demo").unwrap_or_else(|r| panic!("envelope: {r:?}"));
        validate_under(policy, schema, &fields)
            .map(|v| v.properties)
            .map_err(|reasons| reasons.into_iter().map(|r| r.code).collect())
    }

    #[test]
    fn a_policy_may_accept_unplanned_types_and_keep_undeclared_properties() {
        let accept = EventPolicy {
            unplanned_events: UnplannedEvents::Accept,
            ..EventPolicy::default()
        };
        let keep = EventPolicy {
            undeclared_properties: UndeclaredProperties::Keep,
            ..EventPolicy::default()
        };
        let sent = event(r#"{"sku":"A1","qty":2,"secret":"x"}"#, SOURCE);
        assert_eq!(
            run_under(EventPolicy::default(), None, &sent),
            Err(vec![ReasonCode::UnknownEventType])
        );
        assert_eq!(
            run_under(accept, None, &sent),
            Ok(r#"{"qty":2,"secret":"x","sku":"A1"}"#.to_string()),
            "untyped: every property as sent"
        );
        let s = schema(PURCHASE);
        assert_eq!(
            run_under(accept, Some(&s), &sent),
            Ok(r#"{"qty":2,"sku":"A1"}"#.to_string()),
            "a planned type still trims"
        );
        assert_eq!(
            run_under(keep, Some(&s), &sent),
            Ok(r#"{"qty":2,"secret":"x","sku":"A1"}"#.to_string())
        );
        let wrong = event(r#"{"sku":"A1","qty":"two","secret":"x"}"#, SOURCE);
        assert_eq!(
            run_under(keep, Some(&s), &wrong),
            Err(vec![ReasonCode::WrongType]),
            "declared properties are checked under keep too"
        );
        assert_eq!(
            run_under(keep, None, &sent),
            Err(vec![ReasonCode::UnknownEventType])
        );
    }

    #[test]
    fn mapped_properties_become_profile_updates() {
        let s = schema(
            r#"{"eventType":"purchase","properties":[{"name":"sku","type":"string","profileProperty":"lastSku"},
                {"name":"qty","type":"integer"},{"name":"vip","type":"boolean","profileProperty":"vip"}]}"#,
        );
        let raw = RawValue::from_string(event(r#"{"sku":"A1","qty":2}"#, ""))
            .unwrap_or_else(|_| RawValue::NULL.to_owned());
        let fields = check_event(&raw, "demo").unwrap_or_else(|r| panic!("{r:?}"));
        let updates = validate_event(Some(&s), &fields).map(|v| v.profile_updates);
        assert_eq!(
            updates,
            Ok(vec![("lastSku".to_string(), "\"A1\"".to_string())])
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let s = schema(PURCHASE);
        let out = run(
            Some(&s),
            &event(
                r#"{"qty":2.5,"gift":"yes","at":"later","meta":[],"tags":{}}"#,
                "",
            ),
        );
        let expected = vec![
            (ReasonCode::MissingProperty, "$.properties.sku".to_string()),
            (ReasonCode::WrongType, "$.properties.qty".to_string()),
            (ReasonCode::WrongType, "$.properties.gift".to_string()),
            (ReasonCode::WrongType, "$.properties.at".to_string()),
            (ReasonCode::WrongType, "$.properties.meta".to_string()),
            (ReasonCode::WrongType, "$.properties.tags".to_string()),
            (ReasonCode::MissingSource, "$.source".to_string()),
        ];
        assert_eq!(out, Err(expected));
    }

    #[test]
    fn unknown_event_type_is_rejected() {
        let out = run(None, &event("{}", ""));
        assert_eq!(
            out,
            Err(vec![(
                ReasonCode::UnknownEventType,
                "$.eventType".to_string()
            )])
        );
    }

    #[test]
    fn target_requirement_is_enforced() {
        let s = schema(r#"{"eventType":"purchase","targetRequired":true}"#);
        assert_eq!(
            run(Some(&s), &event("{}", "")),
            Err(vec![(ReasonCode::MissingTarget, "$.target".to_string())])
        );
    }

    #[test]
    fn definitions_with_bad_names_or_duplicates_are_refused() {
        let bad = [
            (r#"{"eventType":" padded"}"#, "white space"),
            (r#"{"eventType":"Signed Up "}"#, "white space"),
            (r#"{"eventType":"tab\there"}"#, "control characters"),
            ("{\"eventType\":\"zero\u{200B}width\"}", "invisible"),
            ("{\"eventType\":\"no\u{00A0}break\"}", "other than spaces"),
            (r#"{"eventType":"two  spaces"}"#, "two spaces"),
            (r#"{"eventType":".."}"#, "URL path"),
            (r#"{"eventType":""}"#, "1 to 128 bytes"),
            (
                r#"{"eventType":"ok","properties":[{"name":"x","type":"string"},{"name":"x","type":"integer"}]}"#,
                "declared twice",
            ),
            (
                r#"{"eventType":"ok","properties":[{"name":"x;drop","type":"string"}]}"#,
                "must start with a letter",
            ),
        ];
        for (json, expected) in bad {
            let err = check_definition(&schema(json)).err().unwrap_or_default();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let long = format!(r#"{{"eventType":"{}"}}"#, "a".repeat(MAX_NAME_LEN + 1));
        assert!(check_definition(&schema(&long)).is_err());
        assert!(check_definition(&schema(PURCHASE)).is_ok());
        // Names as people write them (Segment's "Order Completed").
        for name in [
            "Order Completed",
            "9lives",
            "checkout:step-2",
            "Viewed /pricing",
            "Bestellung abgeschlossen ✓",
        ] {
            let json = format!(r#"{{"eventType":"{name}"}}"#);
            assert!(check_definition(&schema(&json)).is_ok(), "{name}");
        }
    }

    #[test]
    fn unknown_property_type_is_a_parse_error_naming_the_type() {
        let err = serde_json::from_str::<EventSchemaSpec>(
            r#"{"eventType":"x","properties":[{"name":"a","type":"text"}]}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("unknown variant `text`"), "{err}");
    }
}
