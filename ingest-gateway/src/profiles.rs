//! Profile reads: a profile with everything merged into it.
//!
//! Profiles are derived in ClickHouse from the event rows (see the worker's
//! `profiles` module and migration 0002). A read resolves the asked id through
//! `profile_aliases` (an anonymous session profile that was identified reads as
//! the profile it merged into), collects the anonymous profiles merged into
//! that profile (those with events of their own), and merges their aggregate
//! states. Every query is keyed by the tables' sorting
//! key (`alias_id` or `profile_id`), so a read costs a few granules whatever the
//! number of profiles. Values are always bound parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("profile store: {0}")]
pub struct ProfileError(String);

/// A profile as the API answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub profile_id: String,
    /// True for the anonymous profile of a session nobody identified (yet).
    pub anonymous: bool,
    /// Ids merged into this one (anonymous session profiles).
    pub merged_ids: Vec<String>,
    pub properties: BTreeMap<String, Box<RawValue>>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub event_count: u64,
    pub session_count: u64,
}

impl Profile {
    /// Only its id: what `/context` answers of an identified profile without
    /// proof of the identity.
    pub fn redacted(self) -> Self {
        Self {
            profile_id: self.profile_id,
            anonymous: self.anonymous,
            merged_ids: Vec::new(),
            properties: BTreeMap::new(),
            first_seen: None,
            last_seen: None,
            event_count: 0,
            session_count: 0,
        }
    }
}

#[derive(Row, Deserialize)]
struct Stats {
    first_seen_ms: u64,
    last_seen_ms: u64,
    events: u64,
    sessions: u64,
}

#[derive(Row, Deserialize)]
struct Property {
    name: String,
    value: String,
}

pub struct ProfileStore {
    client: Client,
}

impl ProfileStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The profile `id` resolves to, with `None` when no event ever named it.
    pub async fn get(&self, id: &str) -> Result<Option<Profile>, ProfileError> {
        let profile = self.load(&self.resolve(id).await?).await?;
        Ok(Some(profile).filter(|p| p.event_count > 0))
    }

    /// The profile of a session: the one the session identified as, else its
    /// anonymous profile, fresh (no events yet) if the session is unknown.
    pub async fn for_session(
        &self,
        scope: &str,
        session_id: &str,
    ) -> Result<Profile, ProfileError> {
        let anonymous = proto::anonymous_profile_id(scope, session_id);
        self.load(&self.resolve(&anonymous).await?).await
    }

    /// Every id that reads as `id` (itself and what merged into it), for filters.
    pub async fn ids_of(&self, id: &str) -> Result<Vec<String>, ProfileError> {
        let surviving = self.resolve(id).await?;
        let mut ids = self.merged_into(&surviving).await?;
        ids.insert(0, surviving);
        Ok(ids)
    }

    /// What an erasure of `id` covers: the profile `id` resolves to, and
    /// every anonymous session profile whose latest identification is that
    /// profile (with events of its own or not); and whether any of them has
    /// stored events.
    pub async fn erasure_targets(
        &self,
        id: &str,
    ) -> Result<(String, Vec<String>, bool), ProfileError> {
        let surviving = self.resolve(id).await?;
        let sql = "SELECT alias_id FROM profile_aliases WHERE alias_id IN                    (SELECT alias_id FROM profile_members WHERE profile_id = ?)                    GROUP BY alias_id HAVING argMaxMerge(target) = ? ORDER BY alias_id";
        let merged: Vec<String> = self
            .fetch(
                self.client
                    .query(sql)
                    .bind(surviving.as_str())
                    .bind(surviving.as_str()),
            )
            .await?;
        let ids: Vec<&str> = std::iter::once(surviving.as_str())
            .chain(merged.iter().map(String::as_str))
            .collect();
        let sql = format!(
            "SELECT count() FROM profile_stats WHERE profile_id IN ({})",
            placeholders(ids.len())
        );
        let mut query = self.client.query(&sql);
        for id in &ids {
            query = query.bind(*id);
        }
        let counts: Vec<u64> = self.fetch(query).await?;
        let known = counts.first().is_some_and(|&n| n > 0) || !merged.is_empty();
        Ok((surviving, merged, known))
    }

    async fn resolve(&self, id: &str) -> Result<String, ProfileError> {
        let sql =
            "SELECT argMaxMerge(target) FROM profile_aliases WHERE alias_id = ? GROUP BY alias_id";
        let found: Vec<String> = self.fetch(self.client.query(sql).bind(id)).await?;
        Ok(found.into_iter().next().unwrap_or_else(|| id.to_string()))
    }

    /// Anonymous profiles, with events of their own, whose session's latest
    /// identification is `profile_id`.
    async fn merged_into(&self, profile_id: &str) -> Result<Vec<String>, ProfileError> {
        let sql = "SELECT DISTINCT alias_id FROM profile_members WHERE profile_id = ?";
        let candidates: Vec<String> = self.fetch(self.client.query(sql).bind(profile_id)).await?;
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let list = placeholders(candidates.len());
        let sql = format!(
            "SELECT alias_id FROM profile_aliases WHERE alias_id IN ({list}) \
             AND alias_id IN (SELECT profile_id FROM profile_stats WHERE profile_id IN ({list})) \
             GROUP BY alias_id HAVING argMaxMerge(target) = ? ORDER BY alias_id"
        );
        let mut statement = self.client.query(&sql);
        for candidate in candidates.iter().chain(&candidates) {
            statement = statement.bind(candidate.as_str());
        }
        self.fetch(statement.bind(profile_id)).await
    }

    async fn load(&self, profile_id: &str) -> Result<Profile, ProfileError> {
        let merged_ids = self.merged_into(profile_id).await?;
        let ids: Vec<&str> = std::iter::once(profile_id)
            .chain(merged_ids.iter().map(String::as_str))
            .collect();
        let stats_sql = format!(
            "SELECT minMerge(first_seen_ms) AS first_seen_ms, maxMerge(last_seen_ms) AS last_seen_ms, \
             toUInt64(uniqExactMerge(events)) AS events, toUInt64(uniqExactMerge(sessions)) AS sessions \
             FROM profile_stats WHERE profile_id IN ({})",
            placeholders(ids.len())
        );
        let properties_sql = format!(
            "SELECT name, argMaxMerge(value) AS value FROM profile_properties \
             WHERE profile_id IN ({}) GROUP BY name ORDER BY name",
            placeholders(ids.len())
        );
        let mut stats = self.client.query(&stats_sql);
        let mut properties = self.client.query(&properties_sql);
        for id in &ids {
            stats = stats.bind(*id);
            properties = properties.bind(*id);
        }
        let stats: Vec<Stats> = self.fetch(stats).await?;
        let properties: Vec<Property> = self.fetch(properties).await?;
        let stats = stats.into_iter().next().filter(|s| s.events > 0);
        let time = |ms: u64| {
            chrono::DateTime::from_timestamp_millis(ms as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        };
        Ok(Profile {
            anonymous: profile_id.starts_with("anon:"),
            profile_id: profile_id.to_string(),
            merged_ids,
            properties: properties
                .into_iter()
                .filter_map(|p| RawValue::from_string(p.value).ok().map(|v| (p.name, v)))
                .collect(),
            first_seen: stats.as_ref().and_then(|s| time(s.first_seen_ms)),
            last_seen: stats.as_ref().and_then(|s| time(s.last_seen_ms)),
            event_count: stats.as_ref().map_or(0, |s| s.events),
            session_count: stats.as_ref().map_or(0, |s| s.sessions),
        })
    }

    async fn fetch<T>(&self, query: clickhouse::query::Query) -> Result<Vec<T>, ProfileError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        match tokio::time::timeout(QUERY_TIMEOUT, query.fetch_all::<T>()).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(error)) => Err(ProfileError(error.to_string())),
            Err(_) => Err(ProfileError(format!("no answer within {QUERY_TIMEOUT:?}"))),
        }
    }
}

/// `?, ?, …`: one bound placeholder per value.
fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}
