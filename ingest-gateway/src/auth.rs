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

use proto::config::{Bootstrap, DataSourceSpec};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::errors::ApiError;
use crate::ratelimit::RateLimiter;

pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A data source as the gateway needs it on the hot path.
#[derive(Debug)]
pub struct DataSource {
    pub id: String,
    pub enabled: bool,
    key_hashes: Vec<KeyHash>,
    pub rate_limiter: Option<RateLimiter>,
}

impl DataSource {
    pub fn from_spec(spec: &DataSourceSpec) -> Result<Self, String> {
        let mut key_hashes: Vec<KeyHash> = spec.write_keys.iter().map(|k| hash_key(k)).collect();
        for text in &spec.write_key_hashes {
            key_hashes.push(parse_key_hash(text).ok_or_else(|| {
                format!("data source {:?}: write key hash {text:?} is not sha256:<64 hex digits>", spec.id)
            })?);
        }
        if spec.id.trim().is_empty() {
            return Err("a data source needs a non-empty id".into());
        }
        Ok(Self {
            id: spec.id.clone(),
            enabled: spec.enabled,
            key_hashes,
            rate_limiter: spec.max_events_per_second.map(RateLimiter::per_second),
        })
    }

    fn accepts_key(&self, presented: &KeyHash) -> bool {
        let mut matched = Choice::from(0);
        for hash in &self.key_hashes {
            matched |= hash.ct_eq(presented);
        }
        matched.into()
    }
}

fn parse_key_hash(text: &str) -> Option<KeyHash> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// All data sources this gateway knows, by id.
#[derive(Debug, Default)]
pub struct Registry {
    sources: RwLock<HashMap<String, Arc<DataSource>>>,
}

impl Registry {
    pub fn from_bootstrap(bootstrap: &Bootstrap) -> Result<Self, String> {
        let registry = Self::default();
        for spec in &bootstrap.data_sources {
            registry.upsert(DataSource::from_spec(spec)?);
        }
        Ok(registry)
    }

    pub fn upsert(&self, source: DataSource) {
        let mut sources = self.sources.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        sources.insert(source.id.clone(), Arc::new(source));
    }

    pub fn len(&self) -> usize {
        self.sources.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data source `client_id` if `token` is one of its live write keys.
    pub fn authenticate(&self, client_id: &str, token: &str) -> Result<Arc<DataSource>, ApiError> {
        let presented = hash_key(token);
        let source = self
            .sources
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(client_id)
            .cloned();
        let source = source.filter(|s| s.accepts_key(&presented)).ok_or(ApiError::InvalidCredentials)?;
        if !source.enabled {
            return Err(ApiError::DataSourceDisabled(source.id.clone()));
        }
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(json: &str) -> Registry {
        let bootstrap: Bootstrap = serde_json::from_str(json).unwrap_or_default();
        Registry::from_bootstrap(&bootstrap).unwrap_or_default()
    }

    fn outcome(registry: &Registry, id: &str, token: &str) -> Result<String, String> {
        registry
            .authenticate(id, token)
            .map(|s| s.id.clone())
            .map_err(|e| e.code().to_string())
    }

    #[test]
    fn accepts_every_live_key_and_refuses_others() {
        let hash = format!("sha256:{}", hash_key("second").iter().map(|b| format!("{b:02x}")).collect::<String>());
        let r = registry(&format!(
            r#"{{"dataSources":[{{"id":"shop","writeKeys":["first"],"writeKeyHashes":["{hash}"]}}]}}"#
        ));
        assert_eq!(outcome(&r, "shop", "first"), Ok("shop".into()));
        assert_eq!(outcome(&r, "shop", "second"), Ok("shop".into()));
        assert_eq!(outcome(&r, "shop", "third"), Err("invalid_credentials".into()));
        assert_eq!(outcome(&r, "other", "first"), Err("invalid_credentials".into()));
    }

    #[test]
    fn disabled_source_is_forbidden_only_with_a_valid_key() {
        let r = registry(r#"{"dataSources":[{"id":"off","writeKeys":["k"],"enabled":false}]}"#);
        assert_eq!(outcome(&r, "off", "k"), Err("data_source_disabled".into()));
        assert_eq!(outcome(&r, "off", "wrong"), Err("invalid_credentials".into()));
    }

    #[test]
    fn malformed_key_hash_is_a_configuration_error() {
        let bootstrap: Bootstrap =
            serde_json::from_str(r#"{"dataSources":[{"id":"x","writeKeyHashes":["md5:abc"]}]}"#).unwrap_or_default();
        let err = Registry::from_bootstrap(&bootstrap).err().unwrap_or_default();
        assert!(err.contains("sha256:<64 hex digits>"), "{err}");
    }
}
