//! Per-data-source rate limit: a token bucket of events per second.
//!
//! Every event of a request costs one token, refused ones too (they are still
//! recorded in the event log). The bucket holds one second's worth, so a
//! producer may burst up to its rate and then sustains exactly the rate. A
//! request is admitted whole or not at all (a batch is never half accepted for
//! rate reasons). A request larger than the bucket is admitted when the bucket
//! is full and leaves it in debt: the next requests wait until the debt is paid
//! at the rate, so over any long period no more than the rate gets through,
//! whatever the request sizes. A refusal's wait is true: retried after it, the
//! same request is admitted (if nothing else took the tokens meanwhile).
//!
//! The limit is per gateway process; with several gateways behind a load
//! balancer each enforces its share of a source's limit
//! (`POWEHI_RATE_LIMIT_SHARE`, see [`RateLimiter::per_second`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    /// The data source's configured limit, for the 429's message.
    events_per_second: u32,
    /// What this process enforces: the limit divided by the share.
    per_second: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Negative while in debt.
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// `events` per second across `share` gateways (1: this one alone), each
    /// enforcing `events / share`.
    pub fn per_second(events: u32, share: u32) -> Self {
        let events = events.max(1);
        let per_second = f64::from(events) / f64::from(share.max(1));
        Self {
            events_per_second: events,
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

    /// Takes up to `wanted` tokens without going into debt; answers how many.
    pub fn take_up_to(&self, wanted: usize, now: Instant) -> usize {
        let mut bucket = self.refilled(now);
        let granted = (bucket.tokens.max(0.0).floor() as usize).min(wanted);
        bucket.tokens -= granted as f64;
        granted
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, Bucket> {
        let mut bucket = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.per_second);
        bucket.refilled_at = now;
        bucket
    }

    /// Takes `events` tokens, or says how long until the request would be
    /// admitted.
    pub fn try_take(&self, events: usize, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.refilled(now);
        let cost = events as f64;
        // A request over the bucket's size needs a full bucket, then goes into debt.
        let needed = cost.min(self.per_second);
        if bucket.tokens >= needed {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (needed - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_one_second_then_the_rate() {
        let limiter = RateLimiter::per_second(10, 1);
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
    fn a_batch_larger_than_the_bucket_leaves_it_in_debt() {
        let limiter = RateLimiter::per_second(10, 1);
        let start = Instant::now();
        assert!(limiter.try_take(50, start).is_ok());
        // 40 owed: even one event waits until the debt is paid (4 s) and a token is back.
        let wait = limiter.try_take(1, start).err();
        assert_eq!(wait, Some(Duration::from_secs_f64(4.1)));
        assert!(limiter.try_take(1, start + Duration::from_secs(4)).is_err());
        assert!(limiter
            .try_take(1, start + Duration::from_millis(4_100))
            .is_ok());
        // Over a long run no more than the rate gets through, whatever the sizes.
        let limiter = RateLimiter::per_second(1_000, 1);
        let mut admitted = 0;
        for tick in 0..600 {
            let now = start + Duration::from_millis(100 * tick);
            if limiter.try_take(50_000, now).is_ok() {
                admitted += 50_000;
            }
        }
        assert!(
            admitted <= 1_000 * 60 + 50_000,
            "{admitted} events in 60 s at 1,000/s"
        );
    }

    #[test]
    fn the_wait_of_a_refusal_is_true() {
        let limiter = RateLimiter::per_second(100, 1);
        let start = Instant::now();
        assert!(limiter.try_take(80, start).is_ok());
        let wait = limiter.try_take(50, start).expect_err("30 tokens left");
        assert!(limiter.try_take(50, start + wait).is_ok());
    }

    #[test]
    fn a_budget_grants_what_it_has_and_never_goes_into_debt() {
        let budget = RateLimiter::per_second(100, 1);
        let start = Instant::now();
        assert_eq!(budget.take_up_to(60, start), 60);
        assert_eq!(budget.take_up_to(60, start), 40);
        assert_eq!(budget.take_up_to(60, start), 0);
        assert_eq!(
            budget.take_up_to(60, start + Duration::from_millis(100)),
            10
        );
    }

    #[test]
    fn each_of_several_gateways_enforces_its_share() {
        let limiter = RateLimiter::per_second(1_000, 4);
        let start = Instant::now();
        assert!(limiter.try_take(250, start).is_ok());
        assert!(limiter.try_take(1, start).is_err());
        assert_eq!(
            limiter.events_per_second(),
            1_000,
            "the 429 names the source's limit"
        );
    }
}
