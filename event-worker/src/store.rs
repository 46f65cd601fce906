//! ClickHouse: batch inserts, and what is already stored (the layout is
//! [`crate::migrations`]'s).
//!
//! Every call is bounded by a timeout (`POWEHI_CLICKHOUSE_TIMEOUT_MS`). A
//! failure is either *unavailable* (no answer, a timeout, an overloaded or
//! read-only server, a missing table: retried with backoff, nothing dropped) or
//! a *refusal* (the server answered with an exception that may depend on the
//! rows sent: the writer then looks for the rows it refuses, see
//! [`crate::writer`]).

use std::time::Duration;

use clickhouse::Client;

use crate::config::Config;
use crate::rows::{EventRow, FeedRow, RejectedRow};

/// Tables the profile views write; what `rebuild-profiles --truncate` empties.
const DERIVED_PROFILE_TABLES: &[&str] = &[
    "profile_aliases",
    "profile_members",
    "profile_stats",
    "profile_properties",
    "sessions",
];

/// Exception codes that say the server cannot take any write right now,
/// whatever the rows: retried as they are, never split.
const UNAVAILABLE_CODES: &[u32] = &[
    60,  // UNKNOWN_TABLE (a table detached or being recreated)
    81,  // UNKNOWN_DATABASE
    159, // TIMEOUT_EXCEEDED
    164, // READONLY
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    236, // ABORTED
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    243, // NOT_ENOUGH_SPACE
    252, // TOO_MANY_PARTS
    394, // QUERY_WAS_CANCELLED
    425, // SYSTEM_ERROR
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("clickhouse did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Layout(String),
    /// The writer's own verdict after looking for refused rows.
    #[error("clickhouse refuses rows: {0}")]
    Refused(String),
}

impl StoreError {
    /// The server answered with an exception that may be about the rows sent
    /// (not one of [`UNAVAILABLE_CODES`]): worth finding the rows it refuses.
    pub fn is_refusal(&self) -> bool {
        match self {
            StoreError::Refused(_) => true,
            StoreError::ClickHouse(clickhouse::error::Error::BadResponse(text)) => {
                exception_code(text).is_some_and(|code| !UNAVAILABLE_CODES.contains(&code))
            }
            _ => false,
        }
    }
}

/// `Code: 395. DB::Exception: …` → 395.
fn exception_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    /// Same server and credentials, no default database (it may not exist yet).
    admin: Client,
    database: String,
    timeout: Duration,
}

impl Store {
    pub fn new(config: &Config) -> Self {
        // Validation off: ClickHouse 18.16 lacks RowBinaryWithNamesAndTypes.
        let admin = Client::default()
            .with_url(&config.clickhouse.url)
            .with_user(&config.clickhouse.user)
            .with_password(&config.clickhouse.password)
            .with_validation(false);
        Self::with_client(
            admin,
            &config.clickhouse.database,
            config.clickhouse_timeout(),
        )
    }

    /// A store of `database` on the server `admin` talks to (a client with no
    /// default database), each call bounded by `timeout`.
    pub fn with_client(admin: Client, database: &str, timeout: Duration) -> Self {
        Self {
            client: admin.clone().with_database(database),
            admin,
            database: database.to_string(),
            timeout,
        }
    }

    /// A client without a default database (migrations create it).
    pub(crate) fn admin(&self) -> &Client {
        &self.admin
    }

    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// One INSERT of all `rows` into `table` (RowBinary, LZ4-compressed):
    /// [`EventRow`]s into `events`,
    /// [`RejectedRow`](crate::rows::RejectedRow)s into `rejected_events`.
    pub async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        self.bounded(async {
            let mut insert = self.client.insert::<T>(table).await?;
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        })
        .await
    }

    /// One INSERT of the profile columns of `rows` into `profile_feed`, whose
    /// materialized views update the profile tables (see [`crate::profiles`]).
    pub async fn insert_feed(&self, rows: &[EventRow]) -> Result<(), StoreError> {
        self.bounded(async {
            let mut insert = self.client.insert::<FeedRow<'_>>("profile_feed").await?;
            for row in rows {
                insert.write(&row.feed()).await?;
            }
            insert.end().await
        })
        .await
    }

    /// Feeds every stored event to the profile tables again, optionally after
    /// emptying them (`powehi-event-worker rebuild-profiles`). Not bounded by
    /// the per-call timeout: it reads the whole table.
    pub async fn rebuild_profiles(&self, truncate: bool) -> Result<(), StoreError> {
        if truncate {
            for table in DERIVED_PROFILE_TABLES {
                self.client
                    .query(&format!("TRUNCATE TABLE {table}"))
                    .execute()
                    .await?;
            }
        }
        // The feed's event time is the corrected one (see rows::FeedRow).
        let columns = "event_id, scope, session_id, profile_id, event_time_ms, kafka_partition, \
                       kafka_offset, profile_property_names, profile_property_values";
        let values = columns.replacen("event_time_ms", "corrected_time_ms", 1);
        self.client
            .query(&format!(
                "INSERT INTO profile_feed ({columns}) SELECT {values} FROM events FINAL"
            ))
            .execute()
            .await?;
        Ok(())
    }

    /// The active partitions of `table` (`YYYYMM` for the event tables).
    pub async fn partitions(&self, table: &str) -> Result<Vec<String>, StoreError> {
        let query = "SELECT DISTINCT partition FROM system.parts \
                     WHERE database = ? AND table = ? AND active";
        self.bounded(
            self.client
                .query(query)
                .bind(&self.database)
                .bind(table)
                .fetch_all(),
        )
        .await
    }

    /// Drops one month of `table`; `partition` must be `YYYYMM` (it is
    /// spliced into the statement: partition ids cannot be bound).
    pub async fn drop_partition(&self, table: &str, partition: &str) -> Result<(), StoreError> {
        if !crate::retention::is_month(partition) {
            return Err(StoreError::Layout(format!(
                "{table}: partition {partition:?} is not a month (YYYYMM)"
            )));
        }
        self.bounded(
            self.client
                .query(&format!("ALTER TABLE {table} DROP PARTITION {partition}"))
                .execute(),
        )
        .await
    }

    /// Whether `events` holds this row (looked up by its whole sort key, so a
    /// few granules are read). An INSERT whose rows the table took can still
    /// fail afterwards, in a materialized view of the table.
    pub async fn holds_event(&self, row: &EventRow) -> Result<bool, StoreError> {
        let query = "SELECT count() FROM events WHERE scope = ? AND event_type = ? \
                     AND event_time = toDateTime(?) AND event_id = ? \
                     AND kafka_partition = ? AND kafka_offset = ?";
        let query = self
            .client
            .query(query)
            .bind(&row.scope)
            .bind(&row.event_type)
            .bind(row.event_time)
            .bind(&row.event_id)
            .bind(row.kafka_partition)
            .bind(row.kafka_offset);
        self.any(query).await
    }

    /// Whether `rejected_events` holds this row (by its whole sort key).
    pub async fn holds_rejection(&self, row: &RejectedRow) -> Result<bool, StoreError> {
        let query = "SELECT count() FROM rejected_events WHERE scope = ? \
                     AND received_at = toDateTime(?) AND event_id = ? \
                     AND kafka_partition = ? AND kafka_offset = ?";
        let query = self
            .client
            .query(query)
            .bind(&row.scope)
            .bind(row.received_at)
            .bind(&row.event_id)
            .bind(row.kafka_partition)
            .bind(row.kafka_offset);
        self.any(query).await
    }

    /// Whether a `SELECT count() …` finds anything.
    async fn any(&self, query: clickhouse::query::Query) -> Result<bool, StoreError> {
        let found: u64 = self.bounded(query.fetch_one()).await?;
        Ok(found > 0)
    }

    /// Offsets of `partition` at or above `from` that are already stored, with
    /// whether as accepted (`events`) or rejected, sorted. After a crash these
    /// are the records written but not yet committed to Kafka; the worker skips
    /// them instead of writing them again. Reads `stored_positions` through its
    /// primary key (Kafka partition, offset): a range read, whatever the size of
    /// `events`.
    pub async fn stored_offsets(
        &self,
        partition: i32,
        from: i64,
    ) -> Result<Vec<(u64, bool)>, StoreError> {
        let query = "SELECT kafka_offset, accepted FROM stored_positions \
                     WHERE kafka_partition = ? AND kafka_offset >= ?";
        let (partition, from) = (partition.max(0) as u32, from.max(0) as u64);
        let mut offsets: Vec<(u64, u8)> = self
            .bounded(
                self.client
                    .query(query)
                    .bind(partition)
                    .bind(from)
                    .fetch_all::<(u64, u8)>(),
            )
            .await?;
        offsets.sort_unstable();
        offsets.dedup_by_key(|(offset, _)| *offset);
        Ok(offsets
            .into_iter()
            .map(|(offset, accepted)| (offset, accepted == 1))
            .collect())
    }

    /// `(scope, item_id, received_at_ms)` of accepted events of `partition`
    /// that carried an itemId and were received in `[since_ms, until_ms]`: the
    /// dedup window around the records being replayed. Month partitions outside
    /// the range are never read, and within them only this Kafka partition's
    /// key range.
    pub async fn recent_items(
        &self,
        partition: i32,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let query = "SELECT scope, item_id, received_at_ms FROM stored_positions \
                     WHERE kafka_partition = ? \
                     AND received_at >= toDateTime(?) AND received_at <= toDateTime(?) \
                     AND received_at_ms >= ? AND received_at_ms <= ? AND item_id != ''";
        self.bounded(
            self.client
                .query(query)
                .bind(partition.max(0) as u32)
                .bind(since_ms / 1000)
                .bind(until_ms / 1000 + 1)
                .bind(since_ms)
                .bind(until_ms)
                .fetch_all::<(String, String, u64)>(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_an_unavailable_server() {
        let bad =
            |text: &str| StoreError::ClickHouse(clickhouse::error::Error::BadResponse(text.into()));
        assert!(
            bad("Code: 395. DB::Exception: Value passed to 'throwIf' function is non zero")
                .is_refusal()
        );
        assert!(bad("Code: 53, e.displayText() = DB::Exception: Type mismatch").is_refusal());
        assert!(!bad("Code: 252. DB::Exception: Too many parts").is_refusal());
        assert!(!bad("Code: 60. DB::Exception: Table db.profile_stats doesn't exist").is_refusal());
        assert!(!bad("no code at all").is_refusal());
        assert!(!StoreError::Timeout(Duration::from_secs(1)).is_refusal());
    }
}
