//! ClickHouse: migrations, batch inserts, and what is already stored.
//!
//! Every call is bounded by a timeout; every failure is returned to the caller,
//! which treats them all as transient (ClickHouse down, overloaded, restarting):
//! rows are built by this worker from typed values, so ClickHouse has no reason
//! to refuse one for its content, and a record is never dropped because a write
//! failed.

use std::time::Duration;

use clickhouse::Client;

use crate::config::Config;

/// Migrations in order; each file's statements are separated by `;` at line end.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_events.sql",
        include_str!("../../deploy/clickhouse/migrations/0001_events.sql"),
    ),
    (
        "0002_profiles.sql",
        include_str!("../../deploy/clickhouse/migrations/0002_profiles.sql"),
    ),
];

pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("clickhouse did not answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    /// Same server and credentials, no default database (it may not exist yet).
    admin: Client,
    database: String,
}

impl Store {
    pub fn new(config: &Config) -> Self {
        // Validation off: ClickHouse 18.16 lacks RowBinaryWithNamesAndTypes.
        let admin = Client::default()
            .with_url(&config.clickhouse.url)
            .with_user(&config.clickhouse.user)
            .with_password(&config.clickhouse.password)
            .with_validation(false);
        Self {
            client: admin.clone().with_database(&config.clickhouse.database),
            admin,
            database: config.clickhouse.database.clone(),
        }
    }

    /// Creates the database and every table and view if missing. Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        bounded(
            self.admin
                .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
                .execute(),
        )
        .await?;
        for (name, text) in MIGRATIONS {
            for statement in statements(text, &self.database) {
                tracing::debug!(migration = name, "applying statement");
                bounded(self.admin.query(&statement).execute()).await?;
            }
        }
        Ok(())
    }

    /// One INSERT of all `rows` into `table` (RowBinary, LZ4-compressed):
    /// [`EventRow`](crate::rows::EventRow)s into `events`,
    /// [`RejectedRow`](crate::rows::RejectedRow)s into `rejected_events`.
    pub async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        bounded(async {
            let mut insert = self.client.insert::<T>(table).await?;
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        })
        .await
    }

    /// Offsets of `partition` at or above `from` that are already stored, in
    /// either table, sorted. After a crash these are the records written but not
    /// yet committed to Kafka; the worker skips them instead of writing them twice.
    pub async fn stored_offsets(&self, partition: i32, from: i64) -> Result<Vec<u64>, StoreError> {
        let query = "SELECT kafka_offset FROM events WHERE kafka_partition = ? AND kafka_offset >= ? \
                     UNION ALL \
                     SELECT kafka_offset FROM rejected_events WHERE kafka_partition = ? AND kafka_offset >= ?";
        let (partition, from) = (partition.max(0) as u32, from.max(0) as u64);
        let mut offsets: Vec<u64> = bounded(
            self.client
                .query(query)
                .bind(partition)
                .bind(from)
                .bind(partition)
                .bind(from)
                .fetch_all::<u64>(),
        )
        .await?;
        offsets.sort_unstable();
        offsets.dedup();
        Ok(offsets)
    }

    /// `(scope, item_id, received_at_ms)` of accepted events of `partition`
    /// received since `since_ms` that carried an itemId (the dedup window).
    pub async fn recent_items(
        &self,
        partition: i32,
        since_ms: u64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let query = "SELECT scope, item_id, received_at_ms FROM events \
                     WHERE kafka_partition = ? AND received_at_ms >= ? AND item_id != ''";
        bounded(
            self.client
                .query(query)
                .bind(partition.max(0) as u32)
                .bind(since_ms)
                .fetch_all::<(String, String, u64)>(),
        )
        .await
    }
}

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(QUERY_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout(QUERY_TIMEOUT)),
    }
}

/// Splits a migration file into statements, with comments removed and the
/// database placeholder filled in.
pub fn statements(text: &str, database: &str) -> Vec<String> {
    let without_comments: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(";\n")
        .map(|s| {
            s.trim()
                .trim_end_matches(';')
                .trim()
                .replace("{database}", database)
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_split_into_statements_for_the_named_database() {
        let all: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|(_, text)| statements(text, "db1"))
            .collect();
        assert_eq!(all.len(), 13);
        assert!(all
            .iter()
            .all(|s| !s.contains("{database}") && !s.contains("--")));
        assert!(all[0].starts_with("CREATE TABLE IF NOT EXISTS db1.events"));
        assert!(all[2].starts_with("CREATE VIEW IF NOT EXISTS db1.event_log"));
    }
}
