//! ISO 8601 timestamps as producers send them.
//!
//! Accepted: RFC 3339 (`2021-10-15T18:49:00+07:00`, `…Z`, fractional seconds), an
//! offset without a colon (`+0700`), a space instead of `T`, and no offset at all,
//! which is read as UTC (what Segment and Snowplow do). The result must fit the
//! ClickHouse `DateTime` of the event log: 1970-01-01 up to the end of 2105.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// First instant that cannot be stored (ClickHouse `DateTime` is a u32 of seconds).
const MAX_EPOCH_SECONDS: i64 = 4_291_747_200; // 2106-01-01T00:00:00Z

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    NotIso8601,
    OutOfRange,
}

pub fn parse_iso8601(text: &str) -> Result<DateTime<Utc>, TimeError> {
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%z"))
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                .map(|naive| Utc.from_utc_datetime(&naive))
        })
        .map_err(|_| TimeError::NotIso8601)?;
    let seconds = parsed.timestamp();
    if !(0..MAX_EPOCH_SECONDS).contains(&seconds) {
        return Err(TimeError::OutOfRange);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> Result<i64, TimeError> {
        parse_iso8601(text).map(|t| t.timestamp_millis())
    }

    #[test]
    fn reference_timestamp_is_converted_to_utc() {
        let t = parse_iso8601("2021-10-15T18:49:00+07:00").map(|t| t.to_rfc3339());
        assert_eq!(t, Ok("2021-10-15T11:49:00+00:00".to_string()));
    }

    #[test]
    fn accepts_common_iso8601_spellings() {
        let expected = Ok(1_634_298_540_123);
        assert_eq!(millis("2021-10-15T11:49:00.123Z"), expected);
        assert_eq!(millis("2021-10-15T18:49:00.123+0700"), expected);
        assert_eq!(millis("2021-10-15 11:49:00.123+00:00"), expected);
        assert_eq!(millis("2021-10-15T11:49:00.123"), expected);
    }

    #[test]
    fn refuses_what_is_not_iso8601() {
        for text in [
            "",
            "yesterday",
            "1634298540",
            "2021-10-15",
            "2021-13-01T00:00:00Z",
        ] {
            assert_eq!(millis(text), Err(TimeError::NotIso8601), "{text}");
        }
    }

    #[test]
    fn refuses_times_the_event_log_cannot_store() {
        assert_eq!(millis("1969-12-31T23:59:59Z"), Err(TimeError::OutOfRange));
        assert_eq!(millis("2106-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert!(millis("2105-12-31T23:59:59Z").is_ok());
    }
}
