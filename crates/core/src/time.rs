//! Server time. Timestamps are stored as microseconds since the Unix epoch
//! in UTC, the precision both SQLite and PostgreSQL keep.

use std::time::{SystemTime, UNIX_EPOCH};

use buffa_types::google::protobuf::Timestamp;

/// Returns the current time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock is before 1970");
    i64::try_from(elapsed.as_micros()).expect("time fits in i64 microseconds")
}

/// Converts stored microseconds into a protobuf timestamp.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
        ..Default::default()
    }
}

/// Converts a protobuf timestamp into microseconds, truncating nanoseconds.
pub fn micros(timestamp: &Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(timestamp.nanos) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_micros() {
        for value in [0, 1, 1_733_000_000_123_456, -1] {
            assert_eq!(micros(&timestamp(value)), value);
        }
    }

    #[test]
    fn negative_micros_keep_nanos_positive() {
        let ts = timestamp(-1);
        assert_eq!(ts.seconds, -1);
        assert_eq!(ts.nanos, 999_999_000);
    }
}
