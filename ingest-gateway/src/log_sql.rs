//! SQL pieces shared by the readers of the event tables (the event-log API,
//! replays): values bound as parameters, never spliced, and keyset paging in
//! arrival order.

use clickhouse::query::Query;

/// A value for a `?` placeholder.
#[derive(Debug)]
pub enum Bind {
    Text(String),
    Number(u64),
}

/// `query` with `binds` bound, in order.
pub fn bound(mut query: Query, binds: Vec<Bind>) -> Query {
    for bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind(text),
            Bind::Number(number) => query.bind(number),
        };
    }
    query
}

/// The conditions "received in `[from, to)`", each bound end given.
pub fn received_within(from_ms: Option<u64>, to_ms: Option<u64>) -> Vec<(&'static str, Bind)> {
    let mut conditions = Vec::new();
    if let Some(from) = from_ms {
        conditions.push(("received_at_ms >= ?", Bind::Number(from)));
    }
    if let Some(to) = to_ms {
        conditions.push(("received_at_ms < ?", Bind::Number(to)));
    }
    conditions
}

/// A row's place in arrival order: (received_at_ms, event_id,
/// kafka_partition, kafka_offset), which no two rows share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrivalKey {
    pub received_at_ms: u64,
    pub event_id: String,
    pub partition: u32,
    pub offset: u64,
}

/// Which side of a key the next page lies on.
#[derive(Debug, Clone, Copy)]
pub enum Past {
    /// Newest first: rows before the key.
    Below,
    /// Oldest first: rows after the key.
    Above,
}

/// The condition "strictly past `key`", with its binds: paging goes on from
/// the last row served and neither repeats nor skips one while rows arrive.
/// Spelled out, as ClickHouse 18.16 does not compare tuples.
pub fn past(key: &ArrivalKey, side: Past) -> (String, Vec<Bind>) {
    let op = match side {
        Past::Below => "<",
        Past::Above => ">",
    };
    let condition = format!(
        "(received_at_ms {op} ? OR (received_at_ms = ? AND (event_id {op} ? OR (event_id = ? AND \
         (kafka_partition {op} ? OR (kafka_partition = ? AND kafka_offset {op} ?))))))"
    );
    let binds = vec![
        Bind::Number(key.received_at_ms),
        Bind::Number(key.received_at_ms),
        Bind::Text(key.event_id.clone()),
        Bind::Text(key.event_id.clone()),
        Bind::Number(u64::from(key.partition)),
        Bind::Number(u64::from(key.partition)),
        Bind::Number(key.offset),
    ];
    (condition, binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_has_one_bind_per_placeholder_and_the_side_s_operator() {
        let key = ArrivalKey {
            received_at_ms: 5,
            event_id: "e".into(),
            partition: 1,
            offset: 9,
        };
        for (side, op, other) in [(Past::Below, "<", ">"), (Past::Above, ">", "<")] {
            let (sql, binds) = past(&key, side);
            assert_eq!(sql.matches('?').count(), binds.len());
            assert!(sql.contains(&format!("kafka_offset {op} ?")) && !sql.contains(other));
        }
    }
}
