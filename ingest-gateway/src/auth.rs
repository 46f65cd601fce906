//! Data sources and their write keys.
//!
//! Write keys are kept only as SHA-256 hashes. A presented key is hashed and
//! compared with every live hash of the data source in constant time, so neither
//! the position of the first differing byte nor which of several rotated keys
//! matched leaks through timing. Plain SHA-256 (not a password hash) is enough:
//! write keys are long random tokens, not human passwords, and the check sits on
//! the hot path of every request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use proto::config::{ConfigSnapshot, DataSourceRecord};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::errors::ApiError;
use crate::ratelimit::RateLimiter;

pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:<hex>`, the stored form of a key hash.
pub fn key_hash_text(hash: &KeyHash) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub fn parse_key_hash(text: &str) -> Option<KeyHash> {
    decode_hex32(text.strip_prefix("sha256:")?)
}

/// 32 bytes from 64 hex digits (either case); `None` otherwise.
pub(crate) fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// A data source as the gateway needs it on the hot path.
#[derive(Debug)]
pub struct DataSource {
    pub id: String,
    pub enabled: bool,
    key_hashes: Vec<KeyHash>,
    pub rate_limiter: Option<RateLimiter>,
    /// Refused events it may still have recorded in the event log this second
    /// (see [`crate::ingest`]).
    pub refusal_budget: RateLimiter,
    /// Profile reads of `/context` (ClickHouse queries) it may still make.
    pub context_budget: RateLimiter,
    /// Verifies `profileIdHash` proofs (see [`crate::identity`]).
    pub identity: Option<crate::identity::IdentityKey>,
    /// Origins whose pages may send (lowercase; `*`: any). See [`crate::cors`].
    allowed_origins: Vec<String>,
    /// Stamped on every record it sends (see [`proto::Envelope::policy`]).
    pub policy: proto::config::EventPolicy,
    /// What it was built from, to rebuild only what changed.
    record: DataSourceRecord,
}

impl DataSource {
    pub fn from_record(record: &DataSourceRecord, limits: &SourceLimits) -> Self {
        Self {
            id: record.id.clone(),
            enabled: record.enabled,
            // Hashes were checked when written; an unreadable one matches nothing.
            key_hashes: record
                .tokens
                .iter()
                .filter_map(|t| parse_key_hash(&t.hash))
                .collect(),
            rate_limiter: record
                .max_events_per_second
                .map(|limit| RateLimiter::per_second(limit, limits.rate_share)),
            refusal_budget: RateLimiter::per_second(
                limits.refusals_recorded_per_second,
                limits.rate_share,
            ),
            context_budget: RateLimiter::per_second(
                limits.context_reads_per_second,
                limits.rate_share,
            ),
            identity: record
                .identity_secret
                .as_deref()
                .map(crate::identity::IdentityKey::new),
            allowed_origins: record
                .allowed_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            policy: record.policy(),
            record: record.clone(),
        }
    }

    /// Whether a page of `origin` may send with this source's keys.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }

    fn accepts_key(&self, presented: &KeyHash) -> bool {
        let mut matched = Choice::from(0);
        for hash in &self.key_hashes {
            matched |= hash.ct_eq(presented);
        }
        matched.into()
    }
}

/// All data sources this gateway knows, by id, kept in step with the config log.
#[derive(Debug)]
pub struct Registry {
    known: RwLock<Known>,
    limits: SourceLimits,
}

/// Per-data-source budgets every source gets from the gateway's flags.
#[derive(Debug, Clone)]
pub struct SourceLimits {
    /// Gateways sharing each source's limits: each enforces its share (see
    /// [`crate::ratelimit`]).
    pub rate_share: u32,
    /// Refused events recorded per source and second, across the gateways.
    pub refusals_recorded_per_second: u32,
    /// Profile reads (`/context`) per source and second, across the gateways.
    pub context_reads_per_second: u32,
}

impl Default for SourceLimits {
    fn default() -> Self {
        Self {
            rate_share: 1,
            refusals_recorded_per_second: 1_000,
            context_reads_per_second: 100,
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(SourceLimits::default())
    }
}

/// The data sources of the last config snapshot.
#[derive(Debug, Default)]
struct Known {
    sources: HashMap<String, Arc<DataSource>>,
    /// Which source each live key hash belongs to, for clients that send a
    /// write key alone (Segment's protocol, see [`crate::segment`]). Looked
    /// up by the SHA-256 of the presented key, which no client can steer.
    by_key: HashMap<KeyHash, String>,
    /// A (replayed) snapshot arrived: credentials can be judged.
    synced: bool,
}

impl Registry {
    pub fn new(limits: SourceLimits) -> Self {
        Self {
            known: RwLock::default(),
            limits,
        }
    }

    /// Makes the registry match `snapshot`. A data source whose record did not
    /// change is kept as it is, rate-limit budget included.
    pub fn sync(&self, snapshot: &ConfigSnapshot) {
        let records = &snapshot.data_sources;
        let mut known = self
            .known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known.sources.retain(|id, _| records.contains_key(id));
        for (id, record) in records {
            if known
                .sources
                .get(id)
                .is_none_or(|current| current.record != *record)
            {
                known.sources.insert(
                    id.clone(),
                    Arc::new(DataSource::from_record(record, &self.limits)),
                );
            }
        }
        let by_key = known
            .sources
            .values()
            .flat_map(|s| s.key_hashes.iter().map(|h| (*h, s.id.clone())))
            .collect();
        known.by_key = by_key;
        known.synced = true;
    }

    /// The data source one of whose live write keys is `key`, for clients that
    /// send a write key without a client id. Ids are not secret but keys are:
    /// a key is only ever found by its hash.
    pub fn authenticate_key(&self, key: &str) -> Result<Arc<DataSource>, ApiError> {
        let presented = hash_key(key);
        self.admit(|known| {
            known
                .by_key
                .get(&presented)
                .and_then(|id| known.sources.get(id))
                .cloned()
        })
    }

    /// Whether a preflight from `origin` may be granted: for the data source
    /// `client_id` when the request names one, else for any source (a
    /// preflight carries no credential headers; the actual request is judged
    /// against its own source).
    pub fn grants_origin(&self, client_id: Option<&str>, origin: &str) -> bool {
        let known = self
            .known
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match client_id {
            Some(id) => known
                .sources
                .get(id)
                .is_some_and(|s| s.allows_origin(origin)),
            None => known.sources.values().any(|s| s.allows_origin(origin)),
        }
    }

    /// The data source `client_id` if `token` is one of its live write keys.
    /// Before the first snapshot nothing can be judged: `NotReady`, not 401.
    pub fn authenticate(&self, client_id: &str, token: &str) -> Result<Arc<DataSource>, ApiError> {
        let presented = hash_key(token);
        self.admit(|known| {
            known
                .sources
                .get(client_id)
                .filter(|s| s.accepts_key(&presented))
                .cloned()
        })
    }

    /// The source `find` picks under the credentials presented: `NotReady`
    /// before the first snapshot (nothing can be judged yet, a 401 would be
    /// final for producers), 401 when none, 403 when it is disabled.
    fn admit(
        &self,
        find: impl FnOnce(&Known) -> Option<Arc<DataSource>>,
    ) -> Result<Arc<DataSource>, ApiError> {
        let (source, synced) = {
            let known = self
                .known
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (find(&known), known.synced)
        };
        if !synced {
            return Err(ApiError::NotReady("the config log is still being replayed"));
        }
        let source = source.ok_or(ApiError::InvalidCredentials)?;
        if !source.enabled {
            return Err(ApiError::DataSourceDisabled(source.id.clone()));
        }
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::config::TokenRecord;

    fn record(id: &str, keys: &[&str], enabled: bool) -> DataSourceRecord {
        DataSourceRecord {
            id: id.into(),
            name: String::new(),
            enabled,
            tokens: keys
                .iter()
                .enumerate()
                .map(|(i, k)| TokenRecord {
                    id: format!("t{i}"),
                    hash: key_hash_text(&hash_key(k)),
                })
                .collect(),
            max_events_per_second: None,
            identity_secret: None,
            allowed_origins: proto::config::any_origin(),
            unplanned_events: Default::default(),
            undeclared_properties: Default::default(),
        }
    }

    fn snapshot(records: &[DataSourceRecord], position: i64) -> ConfigSnapshot {
        let mut snapshot = ConfigSnapshot::default();
        let by_id = records.iter().map(|r| (r.id.clone(), r.clone()));
        snapshot.data_sources.extend(by_id);
        snapshot.position = position;
        snapshot
    }

    fn registry(records: &[DataSourceRecord]) -> Registry {
        let registry = Registry::default();
        registry.sync(&snapshot(records, 0));
        registry
    }

    fn outcome(registry: &Registry, id: &str, token: &str) -> Result<String, String> {
        registry
            .authenticate(id, token)
            .map(|source| source.id.clone())
            .map_err(|e| e.code().to_string())
    }

    #[test]
    fn accepts_every_live_key_and_refuses_others() {
        let r = registry(&[record("shop", &["first", "second"], true)]);
        assert_eq!(outcome(&r, "shop", "first"), Ok("shop".into()));
        assert_eq!(outcome(&r, "shop", "second"), Ok("shop".into()));
        assert_eq!(
            outcome(&r, "shop", "third"),
            Err("invalid_credentials".into())
        );
        assert_eq!(
            outcome(&r, "other", "first"),
            Err("invalid_credentials".into())
        );
    }

    #[test]
    fn disabled_source_is_forbidden_only_with_a_valid_key() {
        let r = registry(&[record("off", &["k"], false)]);
        assert_eq!(outcome(&r, "off", "k"), Err("data_source_disabled".into()));
        assert_eq!(
            outcome(&r, "off", "wrong"),
            Err("invalid_credentials".into())
        );
    }

    #[test]
    fn sync_applies_revocations_and_deletions() {
        let r = registry(&[record("a", &["k1", "k2"], true), record("b", &["k"], true)]);
        r.sync(&snapshot(&[record("a", &["k2"], true)], 1));
        assert_eq!(outcome(&r, "a", "k1"), Err("invalid_credentials".into()));
        assert_eq!(outcome(&r, "a", "k2"), Ok("a".into()));
        assert_eq!(outcome(&r, "b", "k"), Err("invalid_credentials".into()));
    }

    #[test]
    fn a_write_key_alone_finds_its_source_and_follows_revocations() {
        let r = registry(&[
            record("a", &["ka1", "ka2"], true),
            record("off", &["ko"], false),
        ]);
        let by_key = |key: &str| {
            r.authenticate_key(key)
                .map(|s| s.id.clone())
                .map_err(|e| e.code().to_string())
        };
        assert_eq!(by_key("ka2"), Ok("a".into()));
        assert_eq!(by_key("nope"), Err("invalid_credentials".into()));
        assert_eq!(by_key("ko"), Err("data_source_disabled".into()));
        r.sync(&snapshot(&[record("a", &["ka2"], true)], 1));
        assert_eq!(by_key("ka1"), Err("invalid_credentials".into()));
        assert_eq!(by_key("ka2"), Ok("a".into()));
    }

    #[test]
    fn nothing_is_refused_before_the_first_snapshot() {
        assert_eq!(
            outcome(&Registry::default(), "a", "k"),
            Err("not_ready".into())
        );
    }

    #[test]
    fn an_unchanged_source_keeps_its_state_across_snapshots() {
        let r = Registry::default();
        r.sync(&snapshot(&[record("a", &["k"], true)], 7));
        let before = r.authenticate("a", "k").ok();
        r.sync(&snapshot(&[record("a", &["k"], true)], 12));
        let after = r.authenticate("a", "k").ok();
        assert!(
            matches!((&before, &after), (Some(b), Some(a)) if Arc::ptr_eq(b, a)),
            "rate-limit budget and all kept"
        );
        r.sync(&snapshot(&[record("a", &["k", "k2"], true)], 13));
        let changed = r.authenticate("a", "k2").ok();
        assert!(matches!((&after, &changed), (Some(a), Some(c)) if !Arc::ptr_eq(a, c)));
    }

    #[test]
    fn key_hash_text_round_trips_and_bad_text_is_refused() {
        let hash = hash_key("secret");
        assert_eq!(parse_key_hash(&key_hash_text(&hash)), Some(hash));
        assert_eq!(parse_key_hash("md5:abc"), None);
        assert_eq!(parse_key_hash(&format!("sha256:{}", "zz".repeat(32))), None);
    }
}
