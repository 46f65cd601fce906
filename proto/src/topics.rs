//! Kafka topic names and the version of the records written to them.

/// Raw events, one record per event, keyed by `scope` + `sessionId`.
pub const RAW_EVENTS: &str = "powehi.events.raw";
/// Compacted configuration log: data sources and event schemas.
pub const CONFIG: &str = "powehi.config";
/// Version of [`crate::Envelope`]; a worker refuses records of a version it does not know.
pub const ENVELOPE_VERSION: u32 = 1;

/// Kafka record key of an event: a session's events share a partition, so their
/// order is kept. The separator cannot appear in a JSON-decoded id by accident
/// often enough to matter; it only has to spread sessions over partitions.
pub fn record_key(scope: &str, session_id: &str) -> String {
    let mut key = String::with_capacity(scope.len() + session_id.len() + 1);
    key.push_str(scope);
    key.push('\u{1f}');
    key.push_str(session_id);
    key
}
