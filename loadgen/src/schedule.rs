//! Open-loop scheduling, coordinated-omission safe.
//!
//! Request `i` of an open-loop run is *due* at `start + i / rate`, whatever
//! happened to the requests before it. A connection sends its next request at
//! the later of its due time and the moment the connection is free; its latency
//! is counted from the due time. So when the server stalls, the requests that
//! should have gone out during the stall are charged for the wait they would
//! have seen, instead of silently not being sent (the "coordinated omission" of
//! a closed-loop client, which makes a stalled server look fast).

use std::time::Duration;

/// When request `index` is due, after the start of the run, at `rate` per second.
pub fn due_offset(index: u64, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::MAX;
    }
    Duration::from_secs_f64(index as f64 / rate)
}

/// How many requests a run of `duration` at `rate` per second schedules.
pub fn slots(duration: Duration, rate: f64) -> u64 {
    (duration.as_secs_f64() * rate.max(0.0)).floor() as u64
}

/// How many requests fall due before `limit` (the end of a run) at `rate`
/// per second: those with `due_offset(i) < limit`.
pub fn slots_before(limit: Duration, rate: f64) -> u64 {
    let mut n = slots(limit, rate);
    while due_offset(n, rate) < limit {
        n += 1;
    }
    n
}

/// When a request due at `due` actually goes out on a connection free from
/// `free_at` (both as offsets from the start of the run).
pub fn send_at(due: Duration, free_at: Duration) -> Duration {
    due.max(free_at)
}

/// Latency of a request that completed at `done`: from its due time, not from
/// when it was actually sent.
pub fn latency(due: Duration, done: Duration) -> Duration {
    done.saturating_sub(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn due_times_are_evenly_spaced() {
        assert_eq!(due_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(due_offset(1, 1000.0), MS);
        assert_eq!(due_offset(2500, 1000.0), Duration::from_millis(2500));
        assert_eq!(due_offset(3, 0.5), Duration::from_secs(6));
        assert_eq!(slots(Duration::from_secs(2), 250.0), 500);
        assert_eq!(slots(Duration::from_millis(1500), 3.0), 4);
        // Due before the end: 0, 1 and 2 ms at 1000/s before 3 ms; 0 and 1 s before 1.5 s.
        assert_eq!(slots_before(Duration::from_millis(3), 1000.0), 3);
        assert_eq!(slots_before(Duration::from_millis(1500), 1.0), 2);
        assert_eq!(slots_before(Duration::ZERO, 1000.0), 0);
    }

    /// One connection, 100 requests per second, 1 ms service time, except
    /// that request 10 stalls for one second. The requests due during the stall
    /// are charged for it; a closed-loop view would report one slow request.
    #[test]
    fn a_stall_is_charged_to_every_request_due_during_it() {
        let rate = 100.0;
        let mut free_at = Duration::ZERO;
        let mut latencies = Vec::new();
        let mut service_times = Vec::new();
        for i in 0..200 {
            let due = due_offset(i, rate);
            let sent = send_at(due, free_at);
            let service = if i == 10 { Duration::from_secs(1) } else { MS };
            let done = sent + service;
            free_at = done;
            latencies.push(latency(due, done));
            service_times.push(service);
        }
        let slow = |v: &[Duration]| v.iter().filter(|d| **d > Duration::from_millis(10)).count();
        assert_eq!(slow(&service_times), 1);
        // Requests 11..=109 were due during the stall, 110..=119 while its
        // backlog drained (1 ms of work each, one due every 10 ms).
        assert_eq!(slow(&latencies), 110);
        assert_eq!(latencies[10], Duration::from_secs(1));
        assert_eq!(latencies[11], Duration::from_millis(991));
        // Once the backlog drains, latency is back to the service time.
        assert_eq!(latencies[199], MS);
    }
}
