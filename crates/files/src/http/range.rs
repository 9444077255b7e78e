//! The `Range` header of downloads: one `bytes=` range or the whole
//! content.

use std::ops::Range;

/// Part of the content that a `Range` header requests, given the content
/// size.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// The whole content: no usable range, a malformed header, or several
    /// ranges, which the server serves in full.
    Full,
    /// One range within the content, end exclusive.
    Single(Range<u64>),
    /// A well-formed range that starts at or past the end.
    Unsatisfiable,
}

impl ByteRange {
    /// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`.
    pub(super) fn parse(header: &[u8], size: u64) -> Self {
        let Ok(text) = std::str::from_utf8(header) else {
            return Self::Full;
        };
        let Some(spec) = text.trim().strip_prefix("bytes=") else {
            return Self::Full;
        };
        if spec.contains(',') {
            return Self::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Self::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            // Suffix range: the last n bytes.
            return match last.parse::<u64>() {
                Ok(0) => Self::Unsatisfiable,
                Ok(_) if size == 0 => Self::Unsatisfiable,
                Ok(n) => Self::Single(size.saturating_sub(n)..size),
                Err(_) => Self::Full,
            };
        }
        let Ok(start) = first.parse::<u64>() else {
            return Self::Full;
        };
        let end = if last.is_empty() {
            size
        } else {
            match last.parse::<u64>() {
                Ok(last) if last >= start => last.saturating_add(1).min(size),
                _ => return Self::Full,
            }
        };
        if start >= size {
            return Self::Unsatisfiable;
        }
        Self::Single(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_forms() {
        assert_eq!(
            ByteRange::parse(b"bytes=0-9", 100),
            ByteRange::Single(0..10)
        );
        assert_eq!(
            ByteRange::parse(b"bytes=90-", 100),
            ByteRange::Single(90..100)
        );
        assert_eq!(
            ByteRange::parse(b"bytes=-10", 100),
            ByteRange::Single(90..100)
        );
        assert_eq!(
            ByteRange::parse(b"bytes=-500", 100),
            ByteRange::Single(0..100)
        );
        assert_eq!(
            ByteRange::parse(b"bytes=50-500", 100),
            ByteRange::Single(50..100)
        );
    }

    #[test]
    fn range_unsatisfiable() {
        assert_eq!(
            ByteRange::parse(b"bytes=100-", 100),
            ByteRange::Unsatisfiable
        );
        assert_eq!(ByteRange::parse(b"bytes=-0", 100), ByteRange::Unsatisfiable);
        assert_eq!(ByteRange::parse(b"bytes=0-", 0), ByteRange::Unsatisfiable);
    }

    #[test]
    fn range_falls_back_to_full() {
        assert_eq!(ByteRange::parse(b"bytes=0-1,5-6", 100), ByteRange::Full);
        assert_eq!(ByteRange::parse(b"items=0-1", 100), ByteRange::Full);
        assert_eq!(ByteRange::parse(b"bytes=9-1", 100), ByteRange::Full);
        assert_eq!(ByteRange::parse(b"bytes=x-1", 100), ByteRange::Full);
    }
}
