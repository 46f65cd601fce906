//! The ClickHouse layout: `deploy/clickhouse/migrations/*.sql`, applied in
//! order at every start. Every statement is idempotent, so a database of any
//! earlier version, or one another worker is migrating at the same moment,
//! ends in the same layout:
//!
//! - `CREATE … IF NOT EXISTS` creates what is missing;
//! - `ALTER TABLE … ADD COLUMN IF NOT EXISTS c …` adds a column. ClickHouse
//!   18.16 lacks that form, so the runner adds `c` only when `system.columns`
//!   lacks it, and a concurrent worker that added it first is not an error;
//! - a view cannot be altered: one created by an earlier version, told by the
//!   newest column it lacks ([`VIEWS`]), is dropped right before its `CREATE
//!   VIEW IF NOT EXISTS`, which creates it anew, and checked again after (a
//!   worker of the earlier version starting in between may have created the
//!   old one again). Readers of the view see it missing for the moment in
//!   between, once per upgrade.

use crate::store::{Store, StoreError};

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
    (
        "0003_request_context.sql",
        include_str!("../../deploy/clickhouse/migrations/0003_request_context.sql"),
    ),
    (
        "0004_replays.sql",
        include_str!("../../deploy/clickhouse/migrations/0004_replays.sql"),
    ),
    (
        "0005_erasures.sql",
        include_str!("../../deploy/clickhouse/migrations/0005_erasures.sql"),
    ),
    (
        "0006_event_policy.sql",
        include_str!("../../deploy/clickhouse/migrations/0006_event_policy.sql"),
    ),
];

/// Each view, and the newest column its current definition shows: a view
/// without it was created by an earlier version.
const VIEWS: &[(&str, &str)] = &[("event_log", "policy")];

const ADD_COLUMN_IF_MISSING: &str = " ADD COLUMN IF NOT EXISTS ";

/// One statement, as the runner applies it.
#[derive(Debug, PartialEq)]
enum Step {
    Run(String),
    /// `CREATE VIEW IF NOT EXISTS` of one of [`VIEWS`].
    CreateView {
        view: &'static str,
        newest_column: &'static str,
        sql: String,
    },
    /// `sql` adds `column` to `table` (without `IF NOT EXISTS`).
    AddColumn {
        table: String,
        column: String,
        sql: String,
    },
}

impl Step {
    fn of(statement: String) -> Self {
        let view = VIEWS.iter().find(|(view, _)| {
            statement
                .strip_prefix("CREATE VIEW IF NOT EXISTS ")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|name| name.rsplit('.').next() == Some(view))
        });
        if let Some((view, newest_column)) = view {
            return Step::CreateView {
                view,
                newest_column,
                sql: statement,
            };
        }
        let parsed = statement
            .strip_prefix("ALTER TABLE ")
            .and_then(|rest| rest.split_once(ADD_COLUMN_IF_MISSING))
            .and_then(|(table, column)| {
                let table = table.trim().rsplit('.').next()?.to_string();
                let column = column.split_whitespace().next()?.to_string();
                Some((table, column))
            });
        match parsed {
            Some((table, column)) => Step::AddColumn {
                table,
                column,
                sql: statement.replacen(ADD_COLUMN_IF_MISSING, " ADD COLUMN ", 1),
            },
            None => Step::Run(statement),
        }
    }
}

impl Store {
    /// Creates the database and every table, column and view if missing.
    /// Idempotent. A database laid out by an early version (plain MergeTree
    /// `events`, which a repeated write would duplicate) is refused, not
    /// silently used.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let database = self.database().to_string();
        self.admin_execute(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
            .await?;
        for (name, text) in MIGRATIONS {
            for statement in statements(text, &database) {
                tracing::debug!(migration = name, "applying statement");
                match Step::of(statement) {
                    Step::Run(sql) => self.admin_execute(&sql).await?,
                    Step::AddColumn { table, column, sql } => {
                        self.add_column(&table, &column, &sql).await?;
                    }
                    Step::CreateView {
                        view,
                        newest_column,
                        sql,
                    } => self.create_view(view, newest_column, &sql).await?,
                }
            }
        }
        self.check_layout().await
    }

    async fn admin_execute(&self, sql: &str) -> Result<(), StoreError> {
        self.bounded(self.admin().query(sql).execute()).await
    }

    async fn columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        let query = "SELECT name FROM system.columns WHERE database = ? AND table = ?";
        self.bounded(
            self.admin()
                .query(query)
                .bind(self.database())
                .bind(table)
                .fetch_all(),
        )
        .await
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        Ok(self.columns(table).await?.iter().any(|c| c == column))
    }

    async fn add_column(&self, table: &str, column: &str, sql: &str) -> Result<(), StoreError> {
        if self.has_column(table, column).await? {
            return Ok(());
        }
        match self.admin_execute(sql).await {
            // Another worker added it in between.
            Err(_) if self.has_column(table, column).await? => Ok(()),
            outcome => outcome,
        }
    }

    /// Creates `view` when missing, or anew when an earlier version created
    /// it (it lacks `newest_column`); a few rounds, in case a worker of the
    /// earlier version recreates the old one meanwhile.
    async fn create_view(
        &self,
        view: &str,
        newest_column: &str,
        sql: &str,
    ) -> Result<(), StoreError> {
        for _ in 0..3 {
            let columns = self.columns(view).await?;
            if columns.iter().any(|c| c == newest_column) {
                return Ok(());
            }
            if !columns.is_empty() {
                tracing::info!(view, "replacing a view created by an earlier version");
                self.admin_execute(&format!("DROP TABLE IF EXISTS {}.{view}", self.database()))
                    .await?;
            }
            self.admin_execute(sql).await?;
        }
        // Readable still, without the newest columns; the next start retries.
        tracing::warn!(
            view,
            newest_column,
            "the view keeps being created as an earlier version had it: a worker of that \
             version is running; upgrade every worker (README, \"Upgrading\")"
        );
        Ok(())
    }

    async fn check_layout(&self) -> Result<(), StoreError> {
        let query = "SELECT name, engine FROM system.tables WHERE database = ? \
                     AND name IN ('events', 'rejected_events', 'profile_feed')";
        let tables: Vec<(String, String)> = self
            .bounded(self.admin().query(query).bind(self.database()).fetch_all())
            .await?;
        let expected = [
            ("events", "ReplacingMergeTree"),
            ("rejected_events", "ReplacingMergeTree"),
            ("profile_feed", "Null"),
        ];
        for (table, engine) in expected {
            if !tables.iter().any(|(n, e)| n == table && e == engine) {
                return Err(StoreError::Layout(format!(
                    "database {} was laid out by an earlier Powehi version ({table} is not \
                     {engine}); point POWEHI_CLICKHOUSE_DATABASE at a new database (README, \
                     \"Upgrading\")",
                    self.database()
                )));
            }
        }
        Ok(())
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

    fn all_statements() -> Vec<String> {
        MIGRATIONS
            .iter()
            .flat_map(|(_, text)| statements(text, "db1"))
            .collect()
    }

    #[test]
    fn migrations_split_into_statements_for_the_named_database() {
        let all = all_statements();
        assert!(all
            .iter()
            .all(|s| !s.contains("{database}") && !s.contains("--")));
        assert!(all[0].starts_with("CREATE TABLE IF NOT EXISTS db1.events"));
        let views: Vec<&String> = all
            .iter()
            .filter(|s| s.starts_with("CREATE VIEW"))
            .collect();
        assert_eq!(views.len(), 1);
        assert!(views[0].starts_with("CREATE VIEW IF NOT EXISTS db1.event_log"));
        for (view, newest) in VIEWS {
            let definition = all
                .iter()
                .find(|s| s.starts_with(&format!("CREATE VIEW IF NOT EXISTS db1.{view} ")));
            assert!(
                definition.is_some_and(|d| d.contains(newest)),
                "{view} shows {newest}"
            );
        }
    }

    #[test]
    fn column_additions_run_without_if_not_exists() {
        let step = Step::of(
            "ALTER TABLE db1.events ADD COLUMN IF NOT EXISTS origin String DEFAULT ''".into(),
        );
        assert_eq!(
            step,
            Step::AddColumn {
                table: "events".into(),
                column: "origin".into(),
                sql: "ALTER TABLE db1.events ADD COLUMN origin String DEFAULT ''".into(),
            }
        );
        let plain = "CREATE TABLE IF NOT EXISTS db1.t (a UInt8) ENGINE = Null";
        assert_eq!(Step::of(plain.into()), Step::Run(plain.into()));
        let view = "CREATE VIEW IF NOT EXISTS db1.event_log AS SELECT 1";
        assert!(matches!(
            Step::of(view.into()),
            Step::CreateView {
                view: "event_log",
                ..
            }
        ));
        let additions = all_statements()
            .into_iter()
            .map(Step::of)
            .filter(|s| matches!(s, Step::AddColumn { .. }))
            .count();
        assert_eq!(additions, 18);
    }
}
