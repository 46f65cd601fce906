//! Flags both processes share (feature `cli`): where Kafka and ClickHouse are,
//! and how to log. Each is a flag with a `POWEHI_*` environment fallback.

use clap::Args;

/// Kafka and the two topics of the pipeline.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma separated.
    #[arg(
        long = "kafka-brokers",
        env = "POWEHI_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Topic of raw events, one record per event.
    #[arg(long, env = "POWEHI_RAW_TOPIC", default_value = crate::topics::RAW_EVENTS)]
    pub raw_topic: String,

    /// Compacted topic of data sources and event schemas (created if missing,
    /// replayed at start).
    #[arg(long, env = "POWEHI_CONFIG_TOPIC", default_value = crate::topics::CONFIG)]
    pub config_topic: String,
}

/// The ClickHouse server and database of the event tables.
#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP interface.
    #[arg(
        long = "clickhouse-url",
        env = "POWEHI_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub url: String,

    /// Database of the event tables (the workers create it with its tables).
    #[arg(
        long = "clickhouse-database",
        env = "POWEHI_CLICKHOUSE_DATABASE",
        default_value = "powehi"
    )]
    pub database: String,

    #[arg(
        long = "clickhouse-user",
        env = "POWEHI_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,

    /// ClickHouse password.
    #[arg(
        long = "clickhouse-password",
        env = "POWEHI_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
}

impl ClickHouseArgs {
    /// The database name goes into DDL, so it must be a plain identifier.
    pub fn validate(&self) -> Result<(), String> {
        let db = &self.database;
        let plain = db
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if plain {
            Ok(())
        } else {
            Err(format!(
                "POWEHI_CLICKHOUSE_DATABASE={db:?} must be letters, digits and underscores, not starting with a digit"
            ))
        }
    }
}

/// Log filter and output.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `event_worker=debug,info`.
    #[arg(long = "log", env = "POWEHI_LOG", default_value = "info")]
    pub filter: String,
}

impl LogArgs {
    /// Logs to stderr, with colours only on a terminal.
    pub fn init(&self) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(&self.filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(database: &str) -> ClickHouseArgs {
        ClickHouseArgs {
            url: String::new(),
            database: database.into(),
            user: String::new(),
            password: String::new(),
        }
    }

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(args("powehi_test_1").validate().is_ok());
        for bad in ["", "1db", "db-x", "db; DROP", "db.x"] {
            assert!(args(bad).validate().is_err(), "{bad}");
        }
    }
}
