//! Checks of upload metadata.

use agyn_core::{Error, Result};

/// Longest accepted file name, in bytes of UTF-8.
const MAX_FILENAME_BYTES: usize = 255;

/// Longest accepted content type, in bytes.
const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// Content type of an upload that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Checks a file name: 1 to 255 bytes without `/`, `\`, NUL or other
/// control characters.
pub fn filename(value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_field("filename", "is required"));
    }
    if value.len() > MAX_FILENAME_BYTES {
        return Err(Error::invalid_field(
            "filename",
            "must be at most 255 bytes of UTF-8",
        ));
    }
    if value
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(Error::invalid_field(
            "filename",
            "must not contain '/', '\\' or control characters",
        ));
    }
    Ok(())
}

/// Checks a media type `type/subtype[; parameters]` and returns it, or
/// the default for an empty value.
pub fn content_type(value: &str) -> Result<String> {
    if value.is_empty() {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    }
    let invalid = || {
        Error::invalid_field(
            "content_type",
            "must be a media type such as \"text/plain\" or \"text/plain; charset=utf-8\"",
        )
    };
    if value.len() > MAX_CONTENT_TYPE_BYTES || value.chars().any(|c| c.is_control()) {
        return Err(invalid());
    }
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return Err(invalid());
    };
    if !is_token(kind) || !is_token(subtype) {
        return Err(invalid());
    }
    Ok(value.to_string())
}

/// Returns whether `value` is a non-empty RFC 9110 token.
fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a declared size, which must not be negative.
pub fn declared_size(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::invalid_field("size_bytes", "must not be negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_rules() {
        assert!(filename("report.pdf").is_ok());
        assert!(filename("отчёт 2024.txt").is_ok());
        assert!(filename("").is_err());
        assert!(filename("a/b").is_err());
        assert!(filename("a\\b").is_err());
        assert!(filename("a\0b").is_err());
        assert!(filename("a\nb").is_err());
        assert!(filename(&"x".repeat(255)).is_ok());
        assert!(filename(&"x".repeat(256)).is_err());
    }

    #[test]
    fn content_type_rules() {
        assert_eq!(content_type("").unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(content_type("text/plain").unwrap(), "text/plain");
        assert!(content_type("text/plain; charset=utf-8").is_ok());
        assert!(content_type("text").is_err());
        assert!(content_type("text/").is_err());
        assert!(content_type("te xt/plain").is_err());
    }
}
