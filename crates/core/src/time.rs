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

/// Formats stored microseconds as RFC 3339 in UTC, such as
/// `2026-12-04T10:15:00.123456Z`, for JSON routes outside Connect.
pub fn rfc3339(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Earliest and latest seconds a `google.protobuf.Timestamp` may hold:
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// Validates a request timestamp and converts it into microseconds,
/// truncating nanoseconds. `field` names the field in the error.
pub fn checked_micros(field: &str, timestamp: &Timestamp) -> Result<i64, crate::Error> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&timestamp.seconds) {
        return Err(crate::Error::invalid_field(
            field,
            "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ));
    }
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(crate::Error::invalid_field(
            field,
            "nanos must be in [0, 999999999]",
        ));
    }
    Ok(micros(timestamp))
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
    fn checked_micros_rejects_out_of_range() {
        let far = Timestamp {
            seconds: 1 << 62,
            ..Default::default()
        };
        let error = checked_micros("expires_at", &far).unwrap_err();
        assert!(error.message().starts_with("expires_at: must be between"));
        let negative_nanos = Timestamp {
            seconds: 10,
            nanos: -1,
            ..Default::default()
        };
        let error = checked_micros("expires_at", &negative_nanos).unwrap_err();
        assert_eq!(
            error.message(),
            "expires_at: nanos must be in [0, 999999999]"
        );
        let last = Timestamp {
            seconds: MAX_SECONDS,
            nanos: 999_999_999,
            ..Default::default()
        };
        assert_eq!(
            checked_micros("x", &last).unwrap(),
            MAX_SECONDS * 1_000_000 + 999_999
        );
    }

    #[test]
    fn negative_micros_keep_nanos_positive() {
        let ts = timestamp(-1);
        assert_eq!(ts.seconds, -1);
        assert_eq!(ts.nanos, 999_999_000);
    }
}
