//! Step 4 of an erasure: delete every row about a profile and the anonymous
//! session profiles merged into it, from every table that holds one, with
//! ClickHouse mutations (`ALTER TABLE … DELETE WHERE`, which 18.16 has on
//! MergeTree tables), each waited for in `system.mutations`.
//!
//! What "about the profile" means, per table (`ids` = the profile and its
//! merged session profiles, `anon:<scope>:<sessionId>`):
//!
//! | table | rows deleted |
//! |---|---|
//! | `stored_positions` | the Kafka positions of the rows deleted below (first: it is found through them) |
//! | `events` | `profile_id` in `ids` (its own events and its sessions' anonymous ones) |
//! | `rejected_events` | `profile_id` in `ids`, or no `profileId` and a session in `ids` |
//! | `profile_stats`, `profile_properties` | `profile_id` in `ids` |
//! | `profile_aliases` | `alias_id` in `ids` |
//! | `profile_members` | `profile_id` or `alias_id` in `ids` |
//! | `sessions` | the sessions of `ids` |
//!
//! `profile_feed` is a Null table (stores nothing); `event_log` is a view;
//! `erasures` is the audit log and is kept; `replay_jobs` holds a replay's
//! filters and counts, nothing about a person. [`TABLES`] must name every table
//! the migrations create, which a unit test checks.
//!
//! Values are bound parameters; each mutation carries the job id as a marker
//! (`AND '<job>' != ''`), so its own row in `system.mutations` is found.

use std::time::{Duration, Instant};

use clickhouse::Client;

use super::Run;

const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(300);

/// `toUInt64(kafka_partition) * 2^40 + kafka_offset`: one number per position.
const POSITION: &str = "toUInt64(kafka_partition) * 1099511627776 + kafka_offset";

/// Every table with rows, and the phase erasure deletes from it in (`None`:
/// never). `stored_positions` goes first (its rows are found through
/// `events` and `rejected_events`); the alias tables go last, so a job
/// resumed after a partial deletion still finds the merged sessions.
pub const TABLES: &[(&str, Option<u8>)] = &[
    ("stored_positions", Some(0)),
    ("events", Some(1)),
    ("rejected_events", Some(1)),
    ("profile_stats", Some(1)),
    ("profile_properties", Some(1)),
    ("sessions", Some(1)),
    ("profile_aliases", Some(2)),
    ("profile_members", Some(2)),
    ("profile_feed", None),
    ("erasures", None),
    ("replay_jobs", None),
];

/// The WHERE clause of `table` for `n` ids, with one `{ids}` per id list.
fn condition(table: &str) -> Option<String> {
    let events = "profile_id IN ({ids})";
    let rejected =
        "profile_id IN ({ids}) OR (profile_id = '' AND concat('anon:', scope, ':', session_id) IN ({ids}))";
    Some(match table {
        "events" | "profile_stats" | "profile_properties" => events.to_string(),
        "rejected_events" => rejected.to_string(),
        "stored_positions" => format!(
            "{POSITION} IN (SELECT {POSITION} FROM events WHERE {events}) \
             OR {POSITION} IN (SELECT {POSITION} FROM rejected_events WHERE {rejected})"
        ),
        "profile_aliases" => "alias_id IN ({ids})".to_string(),
        "profile_members" => "profile_id IN ({ids}) OR alias_id IN ({ids})".to_string(),
        "sessions" => "concat('anon:', scope, ':', session_id) IN ({ids})".to_string(),
        _ => return None,
    })
}

/// `condition` with its id lists written out as placeholders, and how many
/// times the ids must be bound.
fn bound_condition(table: &str, ids: usize) -> Option<(String, usize)> {
    let text = condition(table)?;
    let lists = text.matches("{ids}").count();
    Some((text.replace("{ids}", &vec!["?"; ids].join(", ")), lists))
}

pub struct Deletion<'a> {
    pub client: &'a Client,
    pub database: &'a str,
    pub timeout: Duration,
}

impl Deletion<'_> {
    /// Rows about `ids` in each table erasure deletes from (each count may
    /// read a whole table: bounded by the job's timeout, not a query's).
    pub async fn count(&self, ids: &[String], run: &Run<'_>) -> Result<Vec<(String, u64)>, String> {
        let mut counts = Vec::new();
        for (table, phase) in TABLES {
            if phase.is_none() {
                continue;
            }
            let Some((condition, lists)) = bound_condition(table, ids.len()) else {
                continue;
            };
            let sql = format!("SELECT count() FROM {table} WHERE {condition}");
            let mut query = self.client.query(&sql);
            for _ in 0..lists {
                for id in ids {
                    query = query.bind(id.as_str());
                }
            }
            let n: u64 = within(self.timeout, query.fetch_one()).await?;
            counts.push((table.to_string(), n));
            run.beat().await;
        }
        Ok(counts)
    }

    /// Deletes the rows about `ids` from every table, phase by phase (see
    /// [`TABLES`]), and waits for each mutation; `marker` (the job id) names
    /// them in `system.mutations`.
    pub async fn delete(&self, ids: &[String], marker: &str, run: &Run<'_>) -> Result<(), String> {
        for phase in 0..=2u8 {
            let tables: Vec<&str> = TABLES
                .iter()
                .filter(|(_, p)| *p == Some(phase))
                .map(|(t, _)| *t)
                .collect();
            for table in &tables {
                self.mutate(table, ids, marker).await?;
            }
            self.wait(&tables, marker, run).await?;
        }
        Ok(())
    }

    async fn mutate(&self, table: &str, ids: &[String], marker: &str) -> Result<(), String> {
        let Some((condition, lists)) = bound_condition(table, ids.len()) else {
            return Ok(());
        };
        let sql = format!("ALTER TABLE {table} DELETE WHERE ({condition}) AND ? != ''");
        let mut query = self.client.query(&sql);
        for _ in 0..lists {
            for id in ids {
                query = query.bind(id.as_str());
            }
        }
        bounded(query.bind(marker).execute())
            .await
            .map_err(|e| format!("deleting from {table}: {e}"))
    }

    /// Waits until the mutations marked `marker` on `tables` are done.
    async fn wait(&self, tables: &[&str], marker: &str, run: &Run<'_>) -> Result<(), String> {
        let started = Instant::now();
        let mut last_beat = Instant::now();
        for table in tables {
            loop {
                let sql = "SELECT count() FROM system.mutations WHERE database = ? AND table = ? \
                           AND is_done = 0 AND position(command, ?) > 0";
                let query = self
                    .client
                    .query(sql)
                    .bind(self.database)
                    .bind(*table)
                    .bind(marker);
                let pending: u64 = bounded(query.fetch_one()).await?;
                if pending == 0 {
                    break;
                }
                if started.elapsed() >= self.timeout {
                    return Err(format!(
                        "the deletion from {table} was not done within {:?} (see system.mutations)",
                        self.timeout
                    ));
                }
                if last_beat.elapsed() >= super::HEARTBEAT {
                    run.beat().await;
                    last_beat = Instant::now();
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }
}

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, String> {
    within(QUERY_TIMEOUT, call).await
}

async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer from ClickHouse within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table a migration creates is named in [`TABLES`], with a
    /// condition when it is erased: a table added later must say here
    /// whether it holds rows about a profile.
    #[test]
    fn every_table_of_the_migrations_is_accounted_for() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/clickhouse/migrations"
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for rest in text.split("CREATE TABLE IF NOT EXISTS {database}.").skip(1) {
                let table: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                seen += 1;
                let entry = TABLES.iter().find(|(t, _)| *t == table);
                assert!(entry.is_some(), "table {table} is not in erasure's TABLES");
                if entry.is_some_and(|(_, phase)| phase.is_some()) {
                    assert!(condition(&table).is_some(), "{table} has no condition");
                }
            }
        }
        assert!(seen >= TABLES.len(), "found {seen} tables");
    }

    #[test]
    fn each_id_list_gets_its_placeholders() {
        let (text, lists) = bound_condition("profile_members", 2).unwrap_or_default();
        assert_eq!(text, "profile_id IN (?, ?) OR alias_id IN (?, ?)");
        assert_eq!(lists, 2);
        let (text, lists) = bound_condition("stored_positions", 1).unwrap_or_default();
        assert_eq!(lists, 3);
        assert!(!text.contains("{ids}"));
    }
}
