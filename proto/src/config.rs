//! Data sources and event schemas: the records of the configuration log and of the
//! `POWEHI_BOOTSTRAP` file (config as code).

use serde::{Deserialize, Serialize};

/// The bootstrap file: `{"dataSources": [...], "eventSchemas": [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bootstrap {
    #[serde(default)]
    pub data_sources: Vec<DataSourceSpec>,
    #[serde(default)]
    pub event_schemas: Vec<EventSchemaSpec>,
}

/// A data source as declared by an operator. Write keys may be given in plain text
/// (hashed on load, never kept) or already hashed as `sha256:<hex>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSourceSpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub write_keys: Vec<String>,
    #[serde(default)]
    pub write_key_hashes: Vec<String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Events per second this data source may send to one gateway (burst: one
    /// second's worth). Absent: unlimited.
    #[serde(default)]
    pub max_events_per_second: Option<u32>,
}

fn enabled_by_default() -> bool {
    true
}

/// An event schema (validation comes with the schema registry).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSchemaSpec {
    pub event_type: String,
    #[serde(default)]
    pub properties: Vec<PropertySpec>,
    #[serde(default)]
    pub source_required: bool,
    #[serde(default)]
    pub target_required: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PropertySpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: PropertyType,
    #[serde(default)]
    pub required: bool,
    /// The profile property this event property sets, if any.
    #[serde(default)]
    pub profile_property: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyType {
    String,
    Integer,
    Number,
    Boolean,
    Datetime,
    Object,
    Array,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_bootstrap_parses() {
        let text = include_str!("../../deploy/demo/bootstrap.json");
        let parsed: Result<Bootstrap, _> = serde_json::from_str(text);
        let parsed = parsed.map_err(|e| e.to_string());
        assert_eq!(parsed.as_ref().map(|b| b.data_sources[0].id.as_str()), Ok("demo"));
        assert_eq!(parsed.map(|b| b.event_schemas[0].event_type.clone()), Ok("view".to_string()));
    }

    #[test]
    fn a_typo_in_the_bootstrap_file_is_an_error_not_a_silent_default() {
        let text = r#"{"dataSources":[{"id":"x","writeKey":"k"}]}"#;
        let err = serde_json::from_str::<Bootstrap>(text).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("unknown field `writeKey`"));
    }
}
