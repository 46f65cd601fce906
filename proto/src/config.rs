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
    /// The secret under which the site's server signs profile ids for
    /// `/context` (see `DataSourceRecord::identity_secret`). Absent: the
    /// log's (set through the admin API), if any.
    #[serde(default)]
    pub identity_secret: Option<String>,
    /// Web origins whose pages may send (CORS): exact origins or `*`.
    /// Absent: the log's, else any.
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    /// What happens to event types no schema planned. Absent: the log's,
    /// else `reject`.
    #[serde(default)]
    pub unplanned_events: Option<UnplannedEvents>,
    /// What happens to properties a schema does not declare. Absent: the
    /// log's, else `trim`.
    #[serde(default)]
    pub undeclared_properties: Option<UndeclaredProperties>,
}

fn enabled_by_default() -> bool {
    true
}

/// An event schema (validation comes with the schema registry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        assert_eq!(
            parsed.as_ref().map(|b| b.data_sources[0].id.as_str()),
            Ok("demo")
        );
        assert_eq!(
            parsed.map(|b| b.event_schemas[0].event_type.clone()),
            Ok("view".to_string())
        );
    }

    #[test]
    fn a_typo_in_the_bootstrap_file_is_an_error_not_a_silent_default() {
        let text = r#"{"dataSources":[{"id":"x","writeKey":"k"}]}"#;
        let err = serde_json::from_str::<Bootstrap>(text)
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("unknown field `writeKey`"));
    }
}

/// A record of the compacted config log (`powehi.config`). The Kafka key names
/// the record ([`data_source_key`], [`schema_key`]); a tombstone deletes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ConfigRecord {
    DataSource(DataSourceRecord),
    EventSchema(EventSchemaRecord),
    Suppression(SuppressionRecord),
}

/// A profile whose events every gateway and worker drops from the moment it
/// applies this record (an erasure's `suppress` mode; see the gateway's
/// `erasure` module for the guarantee). Keyed [`suppression_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuppressionRecord {
    /// The profile as asked (after resolving a merged id).
    pub profile_id: String,
    /// The anonymous session profiles (`anon:<scope>:<sessionId>`) merged
    /// into it: events of those sessions are dropped too, with or without a
    /// `profileId`. At most [`MAX_SUPPRESSED_IDS`].
    #[serde(default)]
    pub merged_ids: Vec<String>,
    /// The erasure job that wrote it last.
    #[serde(default)]
    pub job_id: String,
}

/// Most merged session ids one suppression record carries (a record must
/// stay well under Kafka's 1 MB message limit, and an erasure's statements under
/// ClickHouse's 256 KiB `max_query_size`).
pub const MAX_SUPPRESSED_IDS: usize = 1_000;

pub fn suppression_key(profile_id: &str) -> String {
    format!("suppression/{profile_id}")
}

/// A data source as stored: write keys only as hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSourceRecord {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub enabled: bool,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    #[serde(default)]
    pub max_events_per_second: Option<u32>,
    /// The secret under which the site's server signs profile ids
    /// (`profileIdHash`, an HMAC-SHA256): `/context` answers an identified
    /// profile's properties only with that proof. Absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<String>,
    /// Web origins whose pages may send events with this source's key
    /// (CORS): exact origins (`https://shop.example`) or `*` (any). Records
    /// written before the field existed allow any, as new sources do.
    #[serde(default = "any_origin")]
    pub allowed_origins: Vec<String>,
    /// Left out while it is the default, so a record that never changed it
    /// stays readable by versions before it existed.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unplanned_events: UnplannedEvents,
    #[serde(default, skip_serializing_if = "is_default")]
    pub undeclared_properties: UndeclaredProperties,
}

impl DataSourceRecord {
    /// The policy its events are ingested under (stamped on each record by
    /// the gateway, see [`crate::envelope::Envelope::policy`]).
    pub fn policy(&self) -> EventPolicy {
        EventPolicy {
            unplanned_events: self.unplanned_events,
            undeclared_properties: self.undeclared_properties,
        }
    }
}

/// What a data source's events that no schema planned become: the unplanned
/// events policy of Segment Protocols and RudderStack tracking plans. The
/// defaults are the reference document's rules: an unregistered event type is
/// rejected, and an event keeps only the properties its schema declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicy {
    #[serde(default)]
    pub unplanned_events: UnplannedEvents,
    #[serde(default)]
    pub undeclared_properties: UndeclaredProperties,
}

impl EventPolicy {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// How rows record it (`events.policy`): `reject/trim`, `accept/keep`, …
    pub fn label(&self) -> &'static str {
        use {UndeclaredProperties::*, UnplannedEvents::*};
        match (self.unplanned_events, self.undeclared_properties) {
            (Reject, Trim) => "reject/trim",
            (Reject, Keep) => "reject/keep",
            (Accept, Trim) => "accept/trim",
            (Accept, Keep) => "accept/keep",
        }
    }

    /// The policy a row records as [`Self::label`]; anything else ('' in
    /// rows stored before policies existed) reads as the default, which
    /// such rows were ingested under.
    pub fn from_label(label: &str) -> Self {
        use {UndeclaredProperties::*, UnplannedEvents::*};
        [
            (Reject, Trim),
            (Reject, Keep),
            (Accept, Trim),
            (Accept, Keep),
        ]
        .into_iter()
        .map(|(unplanned_events, undeclared_properties)| EventPolicy {
            unplanned_events,
            undeclared_properties,
        })
        .find(|policy| policy.label() == label)
        .unwrap_or_default()
    }
}

/// An event whose type has no schema: `reject`ed with `unknown_event_type`, or
/// `accept`ed untyped (schema version 0, its properties as sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnplannedEvents {
    #[default]
    Reject,
    Accept,
}

impl UnplannedEvents {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Accept => "accept",
        }
    }
}

/// Properties an event's schema does not declare: `trim`med (dropped) or
/// `keep`t as sent beside the declared, checked ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UndeclaredProperties {
    #[default]
    Trim,
    Keep,
}

impl UndeclaredProperties {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trim => "trim",
            Self::Keep => "keep",
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What a data source allows when nobody said otherwise: any origin (write
/// keys are public: they sit in web pages).
pub fn any_origin() -> Vec<String> {
    vec!["*".to_string()]
}

/// Whether `origin` is a browser origin as `Origin` sends it: `*`, or
/// `scheme://host[:port]` with nothing after.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("origin {origin:?} must start with https:// or http://, or be *"))?;
    let plain = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if plain && origin.len() <= 255 {
        Ok(())
    } else {
        Err(format!(
            "origin {origin:?} must be scheme://host[:port] with no path, or *"
        ))
    }
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRecord {
    /// Names the token for revocation; not secret.
    pub id: String,
    /// `sha256:<64 hex digits>` of the write key.
    pub hash: String,
}

/// One version of an event schema. Versions are never rewritten: a change is a
/// new version, and events record the version they were checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSchemaRecord {
    pub version: u32,
    pub schema: EventSchemaSpec,
}

/// A conditional write: sets the record under `key` only if what last set that
/// key is still what the writer saw (`expect`). It is stored under a key of its
/// own, [`conditional_key`], so compaction never drops it and every follower,
/// however late it replays, folds the same writes in the same order and
/// reaches the same verdict (a record written under its own key, by
/// contrast, would be dropped by compaction when a later write to that key
/// lost its race, and a fresh replay would see only the loser). This is how
/// concurrent admin calls, on one gateway or several, never undo each other;
/// see [`ConfigSnapshot::write_won`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionalWrite {
    /// The record's key ([`data_source_key`], [`schema_key`]).
    pub key: String,
    /// The log offset of the write that last set `key` when the writer planned
    /// this one ([`ConfigSnapshot::last_set`]); `None`: the key was absent.
    pub expect: Option<i64>,
    pub record: ConfigRecord,
}

/// The key of a conditional write: unique per write.
pub fn conditional_key(write_id: &str) -> String {
    format!("write/{write_id}")
}

pub fn data_source_key(id: &str) -> String {
    format!("datasource/{id}")
}

/// Zero-padded so keys sort by version.
pub fn schema_key(event_type: &str, version: u32) -> String {
    format!("schema/{event_type}/{version:010}")
}

/// Everything the config log says, as of the last applied record.
#[derive(Debug, Default, Clone)]
pub struct ConfigSnapshot {
    pub data_sources: std::collections::BTreeMap<String, DataSourceRecord>,
    /// Per event type, every version.
    pub schemas:
        std::collections::BTreeMap<String, std::collections::BTreeMap<u32, EventSchemaRecord>>,
    /// Per event type and version, the log offset its record was applied at
    /// (see [`Self::schema_as_of`]).
    schema_offsets: std::collections::BTreeMap<String, std::collections::BTreeMap<u32, i64>>,
    /// Suppressed profiles by profile id.
    pub suppressions: std::collections::BTreeMap<String, SuppressionRecord>,
    /// Every suppressed id (profiles and their merged session profiles), for
    /// the per-event check; kept in step with [`Self::suppressions`].
    suppressed_ids: std::collections::HashSet<String>,
    /// Per record key, the offset of the write that last set it.
    key_offsets: std::collections::BTreeMap<String, i64>,
    /// Whether each recent conditional write (by offset) won.
    outcomes: std::collections::BTreeMap<i64, bool>,
    /// The next config-log offset to apply: every record below it is in this
    /// snapshot (the log has one partition).
    pub position: i64,
}

/// How many conditional-write verdicts a snapshot remembers.
const OUTCOMES_KEPT: usize = 4096;

impl ConfigSnapshot {
    /// Applies the record at `offset` of the log and moves [`Self::position`]
    /// past it, whether the record was usable or not.
    pub fn apply_at(&mut self, offset: i64, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        self.position = self.position.max(offset);
        let outcome = if key.starts_with("write/") {
            self.apply_conditional(offset, key, value)
        } else {
            self.apply(key, value)
        };
        self.position = self.position.max(offset + 1);
        outcome
    }

    /// A [`ConditionalWrite`] at `offset`: applied when `key` was last set
    /// where the writer expected, ignored otherwise (a lost race, not an
    /// error). The verdict is kept for the writer ([`Self::write_won`]).
    fn apply_conditional(
        &mut self,
        offset: i64,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        let Some(value) = value else {
            return Ok(()); // a write's own key is never deleted; nothing to undo
        };
        let write: ConditionalWrite = serde_json::from_slice(value)
            .map_err(|e| format!("conditional write {key:?} is not readable: {e}"))?;
        let won = self.key_offsets.get(&write.key).copied() == write.expect;
        if won {
            self.apply_record(&write.key, write.record)?;
        }
        self.outcomes.insert(offset, won);
        while self.outcomes.len() > OUTCOMES_KEPT {
            self.outcomes.pop_first();
        }
        Ok(())
    }

    /// Whether the conditional write at `offset` won its race (`None`: not
    /// applied yet, or too long ago to remember).
    pub fn write_won(&self, offset: i64) -> Option<bool> {
        self.outcomes.get(&offset).copied()
    }

    /// The offset of the write that last set `key`; `None` while it is absent.
    pub fn last_set(&self, key: &str) -> Option<i64> {
        self.key_offsets.get(key).copied()
    }

    /// Applies one record of the log at the current position; `value: None` is
    /// a tombstone. A record whose key does not match its content is refused
    /// (and changes nothing).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        let Some(value) = value else {
            return self.delete(key);
        };
        let record: ConfigRecord = serde_json::from_slice(value)
            .map_err(|e| format!("config record {key:?} is not readable: {e}"))?;
        self.apply_record(key, record)
    }

    fn apply_record(&mut self, key: &str, record: ConfigRecord) -> Result<(), String> {
        match record {
            ConfigRecord::DataSource(source) if data_source_key(&source.id) == key => {
                self.data_sources.insert(source.id.clone(), source);
            }
            ConfigRecord::EventSchema(record)
                if schema_key(&record.schema.event_type, record.version) == key =>
            {
                self.schema_offsets
                    .entry(record.schema.event_type.clone())
                    .or_default()
                    .insert(record.version, self.position);
                self.schemas
                    .entry(record.schema.event_type.clone())
                    .or_default()
                    .insert(record.version, record);
            }
            ConfigRecord::Suppression(record) if suppression_key(&record.profile_id) == key => {
                self.suppressions.insert(record.profile_id.clone(), record);
                self.index_suppressions();
            }
            _ => return Err(format!("config record {key:?} does not match its key")),
        }
        self.key_offsets.insert(key.to_string(), self.position);
        Ok(())
    }

    fn index_suppressions(&mut self) {
        self.suppressed_ids = self
            .suppressions
            .values()
            .flat_map(|s| std::iter::once(&s.profile_id).chain(&s.merged_ids))
            .cloned()
            .collect();
    }

    /// Whether an event of data source `scope`, session `session_id`,
    /// belonging to `profile_id` (its `profileId`, if any) is suppressed: it
    /// names a suppressed profile, or its session's anonymous profile is one
    /// merged into a suppressed profile.
    pub fn is_suppressed(&self, scope: &str, session_id: &str, profile_id: Option<&str>) -> bool {
        if self.suppressed_ids.is_empty() {
            return false;
        }
        profile_id.is_some_and(|id| self.suppressed_ids.contains(id))
            || self
                .suppressed_ids
                .contains(&crate::event::anonymous_profile_id(scope, session_id))
    }

    /// Whether `id` (a profile or a merged session profile) is suppressed.
    pub fn is_suppressed_id(&self, id: &str) -> bool {
        self.suppressed_ids.contains(id)
    }

    fn delete(&mut self, key: &str) -> Result<(), String> {
        self.key_offsets.remove(key);
        if let Some(id) = key.strip_prefix("datasource/") {
            self.data_sources.remove(id);
            return Ok(());
        }
        if let Some(id) = key.strip_prefix("suppression/") {
            self.suppressions.remove(id);
            self.index_suppressions();
            return Ok(());
        }
        let parsed = key
            .strip_prefix("schema/")
            .and_then(|rest| rest.rsplit_once('/'))
            .and_then(|(event_type, version)| Some((event_type, version.parse::<u32>().ok()?)));
        let Some((event_type, version)) = parsed else {
            return Err(format!("config tombstone {key:?} names no known record"));
        };
        if let Some(versions) = self.schemas.get_mut(event_type) {
            versions.remove(&version);
            if versions.is_empty() {
                self.schemas.remove(event_type);
            }
        }
        if let Some(offsets) = self.schema_offsets.get_mut(event_type) {
            offsets.remove(&version);
            if offsets.is_empty() {
                self.schema_offsets.remove(event_type);
            }
        }
        Ok(())
    }

    /// The newest version of an event type's schema.
    pub fn latest_schema(&self, event_type: &str) -> Option<&EventSchemaRecord> {
        self.schemas
            .get(event_type)
            .and_then(|v| v.values().next_back())
    }

    /// The newest version of an event type's schema among those applied
    /// before log position `position` (records at offsets below it), i.e. the
    /// one a process whose snapshot stood at `position` knew as the latest.
    /// `None` for `position` means now: [`Self::latest_schema`].
    ///
    /// Judging an event by the schemas as of the position its gateway stamped
    /// makes the verdict a function of the record alone: two workers decoding
    /// the same record at different times (a frozen one and its partitions'
    /// new owner) reach the same one, so their writes collapse in storage.
    pub fn schema_as_of(
        &self,
        event_type: &str,
        position: Option<i64>,
    ) -> Option<&EventSchemaRecord> {
        let Some(position) = position else {
            return self.latest_schema(event_type);
        };
        let offsets = self.schema_offsets.get(event_type)?;
        let version = offsets
            .iter()
            .rev()
            .find(|(_, &offset)| offset < position)
            .map(|(&version, _)| version)?;
        self.schemas.get(event_type)?.get(&version)
    }

    /// Whether any version of `event_type`'s schema is known.
    pub fn knows_event_type(&self, event_type: &str) -> bool {
        self.schemas.contains_key(event_type)
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    fn schema_record(event_type: &str, version: u32) -> Vec<u8> {
        let record = ConfigRecord::EventSchema(EventSchemaRecord {
            version,
            schema: EventSchemaSpec {
                event_type: event_type.into(),
                properties: Vec::new(),
                source_required: version > 1,
                target_required: false,
            },
        });
        serde_json::to_vec(&record).unwrap_or_default()
    }

    #[test]
    fn latest_schema_version_wins_and_tombstones_delete() {
        let mut snapshot = ConfigSnapshot::default();
        for version in [1, 3, 2] {
            let applied = snapshot.apply(
                &schema_key("view", version),
                Some(&schema_record("view", version)),
            );
            assert_eq!(applied, Ok(()));
        }
        assert_eq!(snapshot.latest_schema("view").map(|s| s.version), Some(3));
        assert_eq!(snapshot.apply(&schema_key("view", 3), None), Ok(()));
        assert_eq!(snapshot.latest_schema("view").map(|s| s.version), Some(2));
    }

    #[test]
    fn the_position_moves_past_every_applied_record() {
        let mut snapshot = ConfigSnapshot::default();
        let applied = snapshot.apply_at(4, &schema_key("view", 1), Some(&schema_record("view", 1)));
        assert_eq!(applied, Ok(()));
        assert_eq!(snapshot.position, 5);
        assert!(snapshot.apply_at(9, "garbage", Some(b"x")).is_err());
        assert_eq!(
            snapshot.position, 10,
            "an unusable record still moves the position"
        );
    }

    #[test]
    fn a_schema_as_of_a_position_is_the_newest_applied_before_it() {
        let mut snapshot = ConfigSnapshot::default();
        // v1 at offset 3, v2 at offset 8; something else at 5.
        let v1 = snapshot.apply_at(3, &schema_key("view", 1), Some(&schema_record("view", 1)));
        assert_eq!(v1, Ok(()));
        assert!(snapshot.apply_at(5, "garbage", Some(b"x")).is_err());
        let v2 = snapshot.apply_at(8, &schema_key("view", 2), Some(&schema_record("view", 2)));
        assert_eq!(v2, Ok(()));
        let as_of = |position| snapshot.schema_as_of("view", position).map(|s| s.version);
        assert_eq!(
            as_of(Some(3)),
            None,
            "v1 is the record at 3: not applied below 3"
        );
        assert_eq!(as_of(Some(4)), Some(1));
        assert_eq!(as_of(Some(8)), Some(1), "a gateway at 8 had not applied v2");
        assert_eq!(as_of(Some(9)), Some(2));
        assert_eq!(as_of(None), Some(2), "no stamp: the latest");
        assert!(snapshot.knows_event_type("view") && !snapshot.knows_event_type("click"));
    }

    fn source(enabled: bool, tokens: &[&str]) -> ConfigRecord {
        ConfigRecord::DataSource(DataSourceRecord {
            id: "x".into(),
            name: "x".into(),
            enabled,
            tokens: tokens
                .iter()
                .map(|t| TokenRecord {
                    id: t.to_string(),
                    hash: format!("sha256:{t}"),
                })
                .collect(),
            max_events_per_second: None,
            identity_secret: None,
            allowed_origins: any_origin(),
            unplanned_events: UnplannedEvents::default(),
            undeclared_properties: UndeclaredProperties::default(),
        })
    }

    fn conditional(expect: Option<i64>, record: ConfigRecord) -> Vec<u8> {
        let write = ConditionalWrite {
            key: data_source_key("x"),
            expect,
            record,
        };
        serde_json::to_vec(&write).unwrap_or_default()
    }

    #[test]
    fn of_two_writes_planned_from_one_state_only_the_first_applies() {
        let log: Vec<(i64, String, Vec<u8>)> = vec![
            (
                0,
                conditional_key("a"),
                conditional(None, source(true, &["k1"])),
            ),
            // A second create of the same id: lost.
            (
                1,
                conditional_key("b"),
                conditional(None, source(true, &["k9"])),
            ),
            // Disable and add-a-key, both planned from the create at 0: the later one loses.
            (
                2,
                conditional_key("c"),
                conditional(Some(0), source(false, &["k1"])),
            ),
            (
                3,
                conditional_key("d"),
                conditional(Some(0), source(true, &["k1", "k2"])),
            ),
            // Planned again from the disable at 2: applies, keeping it disabled.
            (
                4,
                conditional_key("e"),
                conditional(Some(2), source(false, &["k1", "k2"])),
            ),
        ];
        let mut snapshot = ConfigSnapshot::default();
        for (offset, key, value) in &log {
            assert_eq!(snapshot.apply_at(*offset, key, Some(value)), Ok(()));
        }
        let won: Vec<_> = (0..5).map(|o| snapshot.write_won(o)).collect();
        assert_eq!(won, [true, false, true, false, true].map(Some));
        let x = snapshot.data_sources.get("x").cloned();
        assert_eq!(x.as_ref().map(|s| s.enabled), Some(false));
        assert_eq!(x.map(|s| s.tokens.len()), Some(2));
        assert_eq!(snapshot.last_set(&data_source_key("x")), Some(4));
    }

    #[test]
    fn a_plain_record_sets_the_key_a_conditional_write_expects() {
        let mut snapshot = ConfigSnapshot::default();
        let plain = serde_json::to_vec(&source(true, &["k1"])).unwrap_or_default();
        assert_eq!(
            snapshot.apply_at(7, &data_source_key("x"), Some(&plain)),
            Ok(())
        );
        assert_eq!(snapshot.last_set(&data_source_key("x")), Some(7));
        let stale = conditional(None, source(false, &[]));
        assert_eq!(
            snapshot.apply_at(8, &conditional_key("z"), Some(&stale)),
            Ok(())
        );
        assert_eq!(snapshot.write_won(8), Some(false));
        assert_eq!(
            snapshot.data_sources.get("x").map(|s| s.enabled),
            Some(true)
        );
    }

    #[test]
    fn a_suppression_covers_the_profile_and_its_merged_sessions_until_deleted() {
        let record = ConfigRecord::Suppression(SuppressionRecord {
            profile_id: "alice".into(),
            merged_ids: vec!["anon:shop:s1".into()],
            job_id: "j".into(),
        });
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let mut snapshot = ConfigSnapshot::default();
        assert!(!snapshot.is_suppressed("shop", "s1", None));
        assert_eq!(
            snapshot.apply(&suppression_key("alice"), Some(&bytes)),
            Ok(())
        );
        assert!(
            snapshot.is_suppressed("shop", "s9", Some("alice")),
            "names the profile"
        );
        assert!(
            snapshot.is_suppressed("shop", "s1", None),
            "a merged session, anonymous"
        );
        assert!(
            snapshot.is_suppressed("shop", "s1", Some("bob")),
            "a merged session, any profile"
        );
        assert!(
            !snapshot.is_suppressed("web", "s1", None),
            "another source's session s1"
        );
        assert!(!snapshot.is_suppressed("shop", "s2", Some("bob")));
        assert!(snapshot.is_suppressed_id("anon:shop:s1"));
        assert!(snapshot
            .apply(&suppression_key("bob"), Some(&bytes))
            .is_err());
        assert_eq!(snapshot.apply(&suppression_key("alice"), None), Ok(()));
        assert!(!snapshot.is_suppressed("shop", "s1", Some("alice")));
    }

    #[test]
    fn record_under_a_foreign_key_changes_nothing() {
        let mut snapshot = ConfigSnapshot::default();
        assert!(snapshot
            .apply(&schema_key("click", 1), Some(&schema_record("view", 1)))
            .is_err());
        assert!(snapshot
            .apply("datasource/x", Some(b"{\"kind\":\"nope\"}"))
            .is_err());
        assert!(snapshot.schemas.is_empty() && snapshot.data_sources.is_empty());
    }

    #[test]
    fn data_source_record_round_trips() {
        let source = DataSourceRecord {
            id: "shop".into(),
            name: "Shop".into(),
            enabled: true,
            tokens: vec![TokenRecord {
                id: "t1".into(),
                hash: format!("sha256:{}", "ab".repeat(32)),
            }],
            max_events_per_second: Some(5),
            identity_secret: None,
            allowed_origins: any_origin(),
            unplanned_events: UnplannedEvents::Accept,
            undeclared_properties: UndeclaredProperties::default(),
        };
        let bytes =
            serde_json::to_vec(&ConfigRecord::DataSource(source.clone())).unwrap_or_default();
        let mut snapshot = ConfigSnapshot::default();
        assert_eq!(snapshot.apply("datasource/shop", Some(&bytes)), Ok(()));
        assert_eq!(snapshot.data_sources.get("shop"), Some(&source));
        assert_eq!(snapshot.apply("datasource/shop", None), Ok(()));
        assert!(snapshot.data_sources.is_empty());
    }

    #[test]
    fn a_default_policy_is_left_out_of_the_record_and_read_as_the_default() {
        let ConfigRecord::DataSource(mut source) = source(true, &[]) else {
            panic!("a data source")
        };
        let text = serde_json::to_string(&source).unwrap_or_default();
        assert!(
            !text.contains("unplanned") && !text.contains("undeclared"),
            "{text}"
        );
        source.undeclared_properties = UndeclaredProperties::Keep;
        let text = serde_json::to_string(&source).unwrap_or_default();
        assert!(text.contains(r#""undeclaredProperties":"keep""#), "{text}");
        let read: Result<DataSourceRecord, _> = serde_json::from_str(&text);
        assert_eq!(read.map(|r| r.policy().label()).ok(), Some("reject/keep"));
        for label in ["reject/trim", "reject/keep", "accept/trim", "accept/keep"] {
            assert_eq!(EventPolicy::from_label(label).label(), label);
        }
        assert!(EventPolicy::from_label("").is_default());
        let wrong = text.replace("keep", "sometimes");
        assert!(serde_json::from_str::<DataSourceRecord>(&wrong).is_err());
    }
}
