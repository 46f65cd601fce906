//! Releases open-loop requests at their due times, more precisely than
//! tokio's timer can.
//!
//! tokio's timer wheel ticks in milliseconds and rounds deadlines up, so a
//! connection that slept until its due time went out about 0.9 ms late at the
//! median and 2–2.6 ms late at p99. The coordinated-omission-safe latency
//! charges that lag to the server measured. Here one thread sleeps on the OS
//! clock (`nanosleep`, tens of microseconds of slack) and hands out one permit
//! per request that has fallen due; a connection takes its request index, then
//! a permit. Permits go to waiters in order, and only as many tasks wake as
//! requests are due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::schedule::due_offset;

/// The pacer wakes at most this often: at high rates it releases the requests
/// due since its last wake together (a few at 15k/s) instead of waking for
/// each one, which would cost the shared machine more CPU than it saves.
const QUANTUM: Duration = Duration::from_micros(200);

pub struct Pacer {
    permits: Arc<Semaphore>,
    rate: f64,
}

impl Pacer {
    /// Starts releasing requests `0..total`, request `i` at
    /// `start + due_offset(i, rate)`. The thread ends once all are released.
    pub fn start(start: Instant, rate: f64, total: u64) -> std::io::Result<Self> {
        let permits = Arc::new(Semaphore::new(0));
        let releasing = permits.clone();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || release(&releasing, start, rate, total))?;
        Ok(Self { permits, rate })
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits until one more request is due. Call it once per request taken.
    pub async fn due(&self) {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }
}

fn release(permits: &Semaphore, start: Instant, rate: f64, total: u64) {
    let mut released = 0;
    while released < total {
        let now = Instant::now();
        let due_now = due_by(now.saturating_duration_since(start), released, rate, total);
        if due_now > released {
            permits.add_permits((due_now - released) as usize);
            released = due_now;
        }
        if released < total {
            let next = start + due_offset(released, rate);
            let wake = next.max(now + QUANTUM);
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }
}

/// How many of the requests `0..total` are due `elapsed` into the run, knowing
/// that the first `released` are. Uses [`due_offset`] itself, so a request is
/// never released before the time its connection computes for it.
fn due_by(elapsed: Duration, released: u64, rate: f64, total: u64) -> u64 {
    let mut due = released;
    while due < total && due_offset(due, rate) <= elapsed {
        due += 1;
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn requests_fall_due_at_their_offsets() {
        // 1000/s: request i is due at i ms.
        assert_eq!(due_by(Duration::ZERO, 0, 1000.0, 100), 1);
        assert_eq!(due_by(MS / 2, 1, 1000.0, 100), 1);
        assert_eq!(due_by(MS, 1, 1000.0, 100), 2);
        assert_eq!(due_by(10 * MS + MS / 2, 2, 1000.0, 100), 11);
        assert_eq!(due_by(Duration::from_secs(5), 11, 1000.0, 100), 100);
        // Never fewer than already released, even if asked about the past.
        assert_eq!(due_by(Duration::ZERO, 7, 1000.0, 100), 7);
    }

    #[tokio::test]
    async fn hands_out_exactly_one_permit_per_request() {
        let pacer = Pacer::start(Instant::now(), 20_000.0, 50).expect("pacer thread");
        let all = async {
            for _ in 0..50 {
                pacer.due().await;
            }
        };
        // 50 requests at 20k/s are all due after 2.5 ms.
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("all 50 requests must be released");
        // The thread released all 50 and ended; no 51st permit ever comes.
        tokio::time::sleep(5 * MS).await;
        assert_eq!(pacer.permits.available_permits(), 0);
        let extra = tokio::time::timeout(20 * MS, pacer.due()).await;
        assert!(extra.is_err(), "a 51st request must not be released");
    }
}
