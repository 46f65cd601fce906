//! `POWEHI_BOOTSTRAP`: config as code, upserted into the config log at start.
//!
//! Declared data sources get their declared name, rate and write keys; keys
//! added through the admin API are kept (a declared key is always live, so
//! revoke it by removing it from the file *and* through the API). The declared
//! `enabled` applies when the file creates the source: afterwards enabling and
//! disabling belong to the admin API, so a restart never re-enables a source
//! an operator disabled. A declared schema that differs from the latest
//! version becomes a new version. Nothing is written when the log already says
//! what the file says, so restarting gateways does not churn versions; each
//! write is conditional (see [`crate::configlog`]), so two gateways starting
//! with the same file make one write, and neither undoes an admin change made
//! meanwhile.

use std::path::Path;

use anyhow::Context;
use proto::config::{
    data_source_key, schema_key, Bootstrap, ConfigRecord, ConfigSnapshot, DataSourceRecord,
    DataSourceSpec, EventSchemaRecord, EventSchemaSpec, TokenRecord,
};
use proto::schema::check_definition;

use crate::auth::{hash_key, key_hash_text, parse_key_hash};

pub fn load(path: &Path) -> anyhow::Result<Bootstrap> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading POWEHI_BOOTSTRAP {}", path.display()))?;
    let bootstrap: Bootstrap = serde_json::from_str(&text)
        .with_context(|| format!("parsing POWEHI_BOOTSTRAP {}", path.display()))?;
    for schema in &bootstrap.event_schemas {
        check_definition(schema)
            .map_err(|problem| anyhow::anyhow!("POWEHI_BOOTSTRAP {}: {problem}", path.display()))?;
    }
    for source in &bootstrap.data_sources {
        check_data_source_id(&source.id)
            .map_err(|problem| anyhow::anyhow!("POWEHI_BOOTSTRAP: {problem}"))?;
        for origin in source.allowed_origins.iter().flatten() {
            proto::config::check_origin(origin)
                .map_err(|problem| anyhow::anyhow!("POWEHI_BOOTSTRAP: {problem}"))?;
        }
    }
    Ok(bootstrap)
}

/// Data-source ids travel in headers and URLs: keep them plain.
pub fn check_data_source_id(id: &str) -> Result<(), String> {
    let plain = !id.is_empty()
        && id.len() <= proto::schema::MAX_NAME_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "data source id {id:?} must be 1 to {} letters, digits, _ - or .",
            proto::schema::MAX_NAME_LEN
        ))
    }
}

/// One thing the file declares.
#[derive(Debug, Clone, Copy)]
pub enum Declared<'a> {
    Source(&'a DataSourceSpec),
    Schema(&'a EventSchemaSpec),
}

pub fn declared(bootstrap: &Bootstrap) -> impl Iterator<Item = Declared<'_>> {
    let sources = bootstrap.data_sources.iter().map(Declared::Source);
    sources.chain(bootstrap.event_schemas.iter().map(Declared::Schema))
}

/// The record to write so that `current` says what `item` declares, if any.
pub fn upsert(
    item: Declared<'_>,
    current: &ConfigSnapshot,
) -> Result<Option<(String, ConfigRecord)>, String> {
    Ok(match item {
        Declared::Source(spec) => {
            let desired = desired_data_source(spec, current.data_sources.get(&spec.id))?;
            (current.data_sources.get(&spec.id) != Some(&desired))
                .then(|| (data_source_key(&spec.id), ConfigRecord::DataSource(desired)))
        }
        Declared::Schema(schema) => {
            let latest = current.latest_schema(&schema.event_type);
            (latest.map(|l| &l.schema) != Some(schema)).then(|| {
                let version = latest.map_or(1, |l| l.version + 1);
                let record = EventSchemaRecord {
                    version,
                    schema: schema.clone(),
                };
                (
                    schema_key(&schema.event_type, version),
                    ConfigRecord::EventSchema(record),
                )
            })
        }
    })
}

/// Every record to write so that `current` says what `bootstrap` declares.
pub fn upserts(
    bootstrap: &Bootstrap,
    current: &ConfigSnapshot,
) -> Result<Vec<(String, ConfigRecord)>, String> {
    let mut writes = Vec::new();
    for item in declared(bootstrap) {
        writes.extend(upsert(item, current)?);
    }
    Ok(writes)
}

fn desired_data_source(
    spec: &DataSourceSpec,
    current: Option<&DataSourceRecord>,
) -> Result<DataSourceRecord, String> {
    let mut tokens: Vec<TokenRecord> = current.map(|c| c.tokens.clone()).unwrap_or_default();
    let declared = spec
        .write_keys
        .iter()
        .map(|key| Ok(key_hash_text(&hash_key(key))));
    let declared_hashes = spec.write_key_hashes.iter().map(|text| {
        parse_key_hash(text)
            .map(|hash| key_hash_text(&hash))
            .ok_or_else(|| {
                format!(
                    "data source {:?}: write key hash {text:?} is not sha256:<64 hex digits>",
                    spec.id
                )
            })
    });
    for hash in declared.chain(declared_hashes) {
        let hash = hash?;
        if !tokens.iter().any(|t| t.hash == hash) {
            // Derived from the hash so every gateway names the token alike.
            let hex = &hash["sha256:".len()..];
            let id = format!("bootstrap-{}", &hex[..12]);
            tokens.push(TokenRecord { id, hash });
        }
    }
    Ok(DataSourceRecord {
        id: spec.id.clone(),
        name: spec.name.clone(),
        // The file's flag creates; the admin API changes it afterwards.
        enabled: current.map_or(spec.enabled, |c| c.enabled),
        tokens,
        max_events_per_second: spec.max_events_per_second,
        identity_secret: spec
            .identity_secret
            .clone()
            .or_else(|| current.and_then(|c| c.identity_secret.clone())),
        allowed_origins: spec
            .allowed_origins
            .clone()
            .or_else(|| current.map(|c| c.allowed_origins.clone()))
            .unwrap_or_else(proto::config::any_origin),
        unplanned_events: spec
            .unplanned_events
            .or_else(|| current.map(|c| c.unplanned_events))
            .unwrap_or_default(),
        undeclared_properties: spec
            .undeclared_properties
            .or_else(|| current.map(|c| c.undeclared_properties))
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(json: &str) -> Bootstrap {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn apply(snapshot: &mut ConfigSnapshot, writes: &[(String, ConfigRecord)]) {
        for (key, record) in writes {
            let bytes = serde_json::to_vec(record).unwrap_or_default();
            assert_eq!(snapshot.apply(key, Some(&bytes)), Ok(()));
        }
    }

    #[test]
    fn second_start_with_the_same_file_writes_nothing() {
        let file = bootstrap(include_str!("../../deploy/demo/bootstrap.json"));
        let mut snapshot = ConfigSnapshot::default();
        let first = upserts(&file, &snapshot).unwrap_or_default();
        assert_eq!(first.len(), 2);
        apply(&mut snapshot, &first);
        assert_eq!(upserts(&file, &snapshot).map(|w| w.len()), Ok(0));
        let demo = snapshot.data_sources.get("demo").map(|d| d.tokens.len());
        assert_eq!(demo, Some(1));
    }

    #[test]
    fn a_changed_schema_becomes_the_next_version_and_api_keys_survive() {
        let mut snapshot = ConfigSnapshot::default();
        let v1 = bootstrap(
            r#"{"dataSources":[{"id":"s","writeKeys":["a"]}],"eventSchemas":[{"eventType":"view"}]}"#,
        );
        let writes = upserts(&v1, &snapshot).unwrap_or_default();
        apply(&mut snapshot, &writes);
        if let Some(source) = snapshot.data_sources.get_mut("s") {
            source.tokens.push(TokenRecord {
                id: "api".into(),
                hash: key_hash_text(&hash_key("from-api")),
            });
        }
        let v2 = bootstrap(
            r#"{"dataSources":[{"id":"s","writeKeys":["a"]}],"eventSchemas":[{"eventType":"view","sourceRequired":true}]}"#,
        );
        let writes = upserts(&v2, &snapshot).unwrap_or_default();
        let keys: Vec<&str> = writes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec![schema_key("view", 2).as_str()]);
    }

    #[test]
    fn a_restart_never_re_enables_a_source_disabled_through_the_api() {
        let file = bootstrap(r#"{"dataSources":[{"id":"s","writeKeys":["a"],"name":"Shop"}]}"#);
        let mut snapshot = ConfigSnapshot::default();
        let first = upserts(&file, &snapshot).unwrap_or_default();
        apply(&mut snapshot, &first);
        if let Some(source) = snapshot.data_sources.get_mut("s") {
            source.enabled = false; // through the API
        }
        assert_eq!(upserts(&file, &snapshot).map(|w| w.len()), Ok(0));
        let renamed =
            bootstrap(r#"{"dataSources":[{"id":"s","writeKeys":["a"],"name":"Shop EU"}]}"#);
        let writes = upserts(&renamed, &snapshot).unwrap_or_default();
        let enabled: Vec<bool> = writes
            .iter()
            .filter_map(|(_, r)| match r {
                ConfigRecord::DataSource(s) => Some(s.enabled),
                _ => None,
            })
            .collect();
        assert_eq!(
            enabled,
            vec![false],
            "a declared change keeps the API's flag"
        );
    }

    #[test]
    fn data_source_ids_must_be_plain() {
        assert!(check_data_source_id("shop-eu_1.prod").is_ok());
        for bad in ["", "a b", "x'--", "a/b", &"x".repeat(200)] {
            assert!(check_data_source_id(bad).is_err(), "{bad}");
        }
    }
}
