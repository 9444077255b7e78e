//! In-memory token buckets keyed by caller. Each replica keeps its own
//! buckets, so with N replicas a caller may get up to N times the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets idle this long are dropped when the map is swept.
const IDLE_EVICTION: Duration = Duration::from_secs(120);
const SWEEP_THRESHOLD: usize = 10_000;

pub struct RateLimiter {
    capacity: f64,
    refill_per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Allows `calls` per minute with bursts of up to `calls`.
    pub fn per_minute(calls: u32) -> Self {
        Self {
            capacity: f64::from(calls),
            refill_per_second: f64::from(calls) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `key`'s bucket. On refusal returns the seconds
    /// until the next call is allowed.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock poisoned");
        if buckets.len() > SWEEP_THRESHOLD {
            buckets.retain(|_, bucket| now.duration_since(bucket.updated) < IDLE_EVICTION);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.refill_per_second).min(self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.refill_per_second;
            Err(wait.ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn limiter_rejects_after_capacity() {
        let limiter = RateLimiter::per_minute(3);
        for _ in 0..3 {
            assert!(limiter.check("alice").is_ok());
        }
        let retry_after = limiter.check("alice").unwrap_err();
        assert!((1..=20).contains(&retry_after), "retry after {retry_after}");
        assert!(limiter.check("bob").is_ok());
    }
}
