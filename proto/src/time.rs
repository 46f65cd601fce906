//! ISO 8601 timestamps as producers send them.
//!
//! Accepted: RFC 3339 (`2021-10-15T18:49:00+07:00`, `…Z`, fractional seconds), an
//! offset without a colon (`+0700`), a space instead of `T`, and no offset at all,
//! which is read as UTC (what Segment and Snowplow do). The result must fit the
//! ClickHouse `DateTime` of the event log: 1970-01-01 up to the end of 2105.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// First instant that cannot be stored (ClickHouse `DateTime` is a u32 of seconds).
const MAX_EPOCH_SECONDS: i64 = 4_291_747_200; // 2106-01-01T00:00:00Z

/// When an event happened by the server's clock: its `timeStamp` moved by how
/// far the producer's clock is off, measured as `sendAt - receivedAt` (the
/// rule of Segment's `timestamp` and Snowplow's `derived_tstamp`). The network
/// time between sending and receiving counts as skew, so the result errs a
/// few milliseconds early. Without `sendAt` nothing can be measured and the
/// `timeStamp` stands. Kept within what the event log can store.
///
/// Profiles order by this time (a device whose clock runs a day ahead does
/// not own a profile's latest values for a day), and the gateway refuses an
/// event whose corrected time is still in the future beyond its tolerance.
pub fn corrected_time_ms(time_stamp_ms: i64, send_at_ms: Option<i64>, received_at_ms: i64) -> i64 {
    let corrected = match send_at_ms {
        Some(sent) => received_at_ms.saturating_sub(sent.saturating_sub(time_stamp_ms)),
        None => time_stamp_ms,
    };
    corrected.clamp(0, MAX_EPOCH_SECONDS * 1000 - 1)
}

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
    fn corrected_time_moves_the_event_by_the_clock_skew() {
        let received = 1_700_000_000_000;
        // The device clock runs an hour ahead: the event happened 5 s before sending.
        let hour = 3_600_000;
        let corrected = corrected_time_ms(received + hour - 5_000, Some(received + hour), received);
        assert_eq!(corrected, received - 5_000);
        // Without sendAt the timeStamp stands, even in the future.
        assert_eq!(
            corrected_time_ms(received + hour, None, received),
            received + hour
        );
        // A skew that would leave the storable range is clamped to it.
        assert_eq!(corrected_time_ms(0, Some(4_000_000_000_000), received), 0);
    }

    #[test]
    fn refuses_times_the_event_log_cannot_store() {
        assert_eq!(millis("1969-12-31T23:59:59Z"), Err(TimeError::OutOfRange));
        assert_eq!(millis("2106-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert!(millis("2105-12-31T23:59:59Z").is_ok());
    }
}
