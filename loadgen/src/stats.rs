//! Latency samples and percentiles, and the one-line reports.
//!
//! Samples are kept exactly (microseconds, 8 bytes each: a million requests
//! cost 8 MB), so percentiles are exact, nearest-rank.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<u64>,
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(latency.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    pub fn percentiles(&mut self) -> Percentiles {
        self.micros.sort_unstable();
        let n = self.micros.len();
        let ms = |us: u64| us as f64 / 1000.0;
        let mean = if n == 0 {
            0.0
        } else {
            ms(self.micros.iter().sum::<u64>()) / n as f64
        };
        Percentiles {
            count: n,
            p50: ms(nearest_rank(&self.micros, 0.50)),
            p99: ms(nearest_rank(&self.micros, 0.99)),
            p999: ms(nearest_rank(&self.micros, 0.999)),
            max: ms(self.micros.last().copied().unwrap_or(0)),
            mean,
        }
    }
}

/// The smallest sample with at least `q` of the samples at or below it.
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Percentiles {
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50": round3(self.p50),
            "p99": round3(self.p99),
            "p999": round3(self.p999),
            "max": round3(self.max),
            "mean": round3(self.mean),
        })
    }

    pub fn human(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.p50, self.p99, self.p999, self.max
        )
    }
}

/// Counts of answers by status (`"200"`, `"503"`, `"io_error"`, …).
pub type StatusCounts = BTreeMap<String, u64>;

pub fn merge_counts(into: &mut StatusCounts, from: StatusCounts) {
    for (status, n) in from {
        *into.entry(status).or_default() += n;
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Per second, 0 for an empty interval.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        round3(count as f64 / secs)
    } else {
        0.0
    }
}

/// The result of a measurement: one JSON line on stdout (what bench/run.sh
/// reads), one line for people on stderr.
pub fn emit(summary: &Value, human: &str) {
    println!("{summary}");
    eprintln!("{human}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l = Latencies::default();
        for ms in (1..=1000).rev() {
            l.record(Duration::from_millis(ms));
        }
        let p = l.percentiles();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(p.mean, 500.5);
    }

    #[test]
    fn small_and_empty_sets_do_not_panic() {
        assert_eq!(Latencies::default().percentiles().p99, 0.0);
        let mut one = Latencies::default();
        one.record(Duration::from_micros(1500));
        let p = one.percentiles();
        assert_eq!((p.p50, p.p999, p.max), (1.5, 1.5, 1.5));
        let mut two = Latencies::default();
        two.record(Duration::from_millis(1));
        two.merge(one);
        assert_eq!(two.percentiles().p99, 1.5);
    }

    #[test]
    fn rates_and_counts() {
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        let mut a: StatusCounts = [("200".to_string(), 2)].into();
        merge_counts(
            &mut a,
            [("200".to_string(), 3), ("503".to_string(), 1)].into(),
        );
        assert_eq!(a["200"], 5);
        assert_eq!(a["503"], 1);
        let json = Percentiles {
            count: 1,
            p50: 1.23456,
            p99: 2.0,
            p999: 3.0,
            max: 4.0,
            mean: 1.0,
        }
        .to_json();
        assert_eq!(json["p50"], 1.235);
    }
}
