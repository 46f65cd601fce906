//! Per-data-source rate limit: a token bucket of events per second.
//!
//! The bucket holds one second's worth of events, so a producer may burst up to
//! its rate and then sustains exactly the rate. A request is admitted whole or
//! not at all (a batch is never half accepted for rate reasons). A batch larger
//! than the bucket is admitted when the bucket is full, so no request size is
//! refused forever. The limit applies per gateway process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    events_per_second: u32,
    per_second: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    pub fn per_second(events: u32) -> Self {
        let per_second = f64::from(events.max(1));
        Self {
            events_per_second: events.max(1),
            per_second,
            state: Mutex::new(Bucket {
                tokens: per_second,
                refilled_at: Instant::now(),
            }),
        }
    }

    pub fn events_per_second(&self) -> u32 {
        self.events_per_second
    }

    /// Takes `events` tokens, or says how long until they would be there.
    pub fn try_take(&self, events: usize, now: Instant) -> Result<(), Duration> {
        let mut bucket = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.per_second);
        bucket.refilled_at = now;
        let cost = (events as f64).min(self.per_second);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (cost - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_one_second_then_the_rate() {
        let limiter = RateLimiter::per_second(10);
        let start = Instant::now();
        assert!(limiter.try_take(10, start).is_ok());
        let wait = limiter.try_take(1, start).err();
        assert!(
            wait.is_some_and(|w| w > Duration::from_millis(90) && w <= Duration::from_millis(100))
        );
        assert!(limiter
            .try_take(5, start + Duration::from_millis(500))
            .is_ok());
        assert!(limiter
            .try_take(1, start + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn a_batch_larger_than_the_bucket_passes_when_the_bucket_is_full() {
        let limiter = RateLimiter::per_second(10);
        let start = Instant::now();
        assert!(limiter.try_take(50, start).is_ok());
        assert!(limiter
            .try_take(50, start + Duration::from_millis(999))
            .is_err());
        assert!(limiter.try_take(50, start + Duration::from_secs(1)).is_ok());
    }
}
