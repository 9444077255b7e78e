//! Percentiles of latency samples.

use std::time::Duration;

use serde_json::{Value, json};

/// Latency samples, sorted on creation.
pub struct Distribution {
    sorted: Vec<Duration>,
}

impl Distribution {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Returns the nearest-rank percentile `p` (0 to 100), or zero without
    /// samples.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    /// p50, p90, p99, p99.9 and the maximum in milliseconds.
    pub fn summary_ms(&self) -> Value {
        json!({
            "samples": self.len(),
            "p50_ms": millis(self.percentile(50.0)),
            "p90_ms": millis(self.percentile(90.0)),
            "p99_ms": millis(self.percentile(99.0)),
            "p99_9_ms": millis(self.percentile(99.9)),
            "max_ms": millis(self.max()),
        })
    }
}

/// `duration` in milliseconds, rounded to microseconds.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let distribution = Distribution::new(samples);
        assert_eq!(distribution.percentile(50.0), Duration::from_millis(50));
        assert_eq!(distribution.percentile(99.0), Duration::from_millis(99));
        assert_eq!(distribution.percentile(100.0), Duration::from_millis(100));
        assert_eq!(distribution.percentile(0.0), Duration::from_millis(1));
    }

    #[test]
    fn percentile_of_no_samples_is_zero() {
        let distribution = Distribution::new(Vec::new());
        assert_eq!(distribution.percentile(99.0), Duration::ZERO);
        assert_eq!(distribution.max(), Duration::ZERO);
    }
}
