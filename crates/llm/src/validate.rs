//! Checks of provider and model fields that need no stored state. Error
//! messages name header names but never a token or header value.

use std::collections::BTreeMap;

use agyn_api_llm::agynio::api::llm::v1::{AuthMethod, Protocol};
use agyn_core::{Error, Result};
use buffa::Enumeration as _;

/// Maximum provider name length, in characters.
pub const PROVIDER_NAME_MAX_CHARS: usize = 64;
/// Maximum model name length, in characters.
pub const MODEL_NAME_MAX_CHARS: usize = 128;
/// Maximum length of a model's upstream id, in characters.
pub const REMOTE_NAME_MAX_CHARS: usize = 256;
/// Maximum endpoint URL length, in characters.
pub const ENDPOINT_MAX_CHARS: usize = 2_048;
/// Maximum size of a token and of each custom header value, in bytes.
pub const SECRET_MAX_BYTES: usize = 8 * 1024;
/// Maximum number of custom headers of a provider.
pub const MAX_HEADERS: usize = 32;

/// Header names a provider may not set: hop-by-hop and routing headers,
/// which the proxy computes itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Returns the proto name of an auth method, such as `AUTH_METHOD_BEARER`.
pub(crate) fn auth_method_name(method: AuthMethod) -> &'static str {
    method.proto_name()
}

/// Returns the proto name of a protocol, such as `PROTOCOL_RESPONSES`.
pub(crate) fn protocol_name(protocol: Protocol) -> &'static str {
    protocol.proto_name()
}

/// Checks an endpoint: an absolute `http` or `https` URL with a host, at
/// most [`ENDPOINT_MAX_CHARS`] characters, without user information.
/// Returns it trimmed.
pub(crate) fn endpoint(value: &str) -> Result<&str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid_field("endpoint", "is required"));
    }
    if value.chars().count() > ENDPOINT_MAX_CHARS {
        return Err(Error::invalid_field(
            "endpoint",
            &format!("must be at most {ENDPOINT_MAX_CHARS} characters"),
        ));
    }
    let invalid = || Error::invalid_field("endpoint", "must be an absolute http or https URL");
    let url = reqwest::Url::parse(value).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    // A reader of the provider would see credentials written into the URL.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid_field(
            "endpoint",
            "must not contain user information; put credentials in token or headers",
        ));
    }
    Ok(value)
}

/// Checks a token that is not empty: at most [`SECRET_MAX_BYTES`] and
/// sendable in an HTTP header.
pub(crate) fn token(value: &str) -> Result<()> {
    if value.len() > SECRET_MAX_BYTES {
        return Err(Error::invalid_field("token", "must be at most 8 KiB"));
    }
    if !is_header_value(value) {
        return Err(Error::invalid_field(
            "token",
            "must not contain CR, LF, NUL or other control characters",
        ));
    }
    Ok(())
}

/// Checks a custom header map of 1 to [`MAX_HEADERS`] entries and returns
/// it keyed by lowercase name. Names are RFC 7230 tokens compared
/// case-insensitively, and reserved names are rejected. Values are at most
/// [`SECRET_MAX_BYTES`] and must be sendable in an HTTP header.
pub(crate) fn headers(entries: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    if entries.is_empty() {
        return Err(Error::invalid_field(
            "headers",
            "at least one header is required for AUTH_METHOD_CUSTOM_HEADERS",
        ));
    }
    if entries.len() > MAX_HEADERS {
        return Err(Error::invalid_field(
            "headers",
            &format!("must have at most {MAX_HEADERS} entries"),
        ));
    }
    let mut headers = BTreeMap::new();
    for (name, value) in entries {
        if !is_token(name) {
            return Err(Error::invalid_field(
                "headers",
                &format!("name {name:?} is not a valid HTTP header name"),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if is_reserved(&lower) {
            return Err(Error::invalid_field(
                "headers",
                &format!("name {lower:?} is reserved"),
            ));
        }
        if value.len() > SECRET_MAX_BYTES {
            return Err(Error::invalid_field(
                "headers",
                &format!("value of {lower:?} must be at most 8 KiB"),
            ));
        }
        if !is_header_value(value) {
            return Err(Error::invalid_field(
                "headers",
                &format!(
                    "value of {lower:?} must not contain CR, LF, NUL or other control characters"
                ),
            ));
        }
        if headers.insert(lower.clone(), value.clone()).is_some() {
            return Err(Error::invalid_field(
                "headers",
                &format!("name {lower:?} appears more than once; names are case-insensitive"),
            ));
        }
    }
    Ok(headers)
}

/// Returns whether `name` is an RFC 7230 token: one or more of the visible
/// ASCII characters other than the delimiters `"(),/:;<=>?@[\]{}`.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Returns whether a lowercase header name is reserved for the platform or
/// the transport.
fn is_reserved(lower: &str) -> bool {
    RESERVED_HEADERS.contains(&lower) || lower.starts_with("proxy-") || lower.starts_with("x-agyn-")
}

/// Returns whether `value` can be sent as an HTTP header value: no control
/// characters other than horizontal tab, which rules out CR, LF and NUL.
fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| byte == b'\t' || !(byte.is_ascii_control()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn header_names_follow_rfc_7230() {
        assert!(is_token("X-Custom_Header.1~"));
        for name in ["", "x y", "x:y", "x\u{e9}", "(x)", "x/y"] {
            assert!(!is_token(name), "{name:?}");
        }
    }

    #[test]
    fn headers_are_lowercased() {
        let map = headers(&pairs(&[("X-Api-Version", "2")])).unwrap();
        assert_eq!(map.get("x-api-version").map(String::as_str), Some("2"));
    }

    #[test]
    fn reserved_headers_are_rejected() {
        for name in ["Host", "te", "Proxy-Authorization", "x-agyn-thread-id"] {
            let error = headers(&pairs(&[(name, "v")])).unwrap_err();
            assert!(error.message().ends_with("is reserved"), "{name}: {error}");
        }
    }

    #[test]
    fn header_values_reject_line_breaks() {
        for value in ["a\rb", "a\nb", "a\0b", "a\u{7f}"] {
            let error = headers(&pairs(&[("x-a", value)])).unwrap_err();
            assert!(
                error.message().contains("control characters"),
                "{value:?}: {error}"
            );
            assert!(!error.message().contains(value));
        }
        assert!(headers(&pairs(&[("x-a", "tab\tand caf\u{e9}")])).is_ok());
    }

    #[test]
    fn endpoints_must_be_absolute_http() {
        assert_eq!(
            endpoint(" https://api.example.com/v1 ").unwrap(),
            "https://api.example.com/v1"
        );
        for value in [
            "ftp://x",
            "/v1/responses",
            "https://",
            "not a url",
            "mailto:a@b",
        ] {
            assert!(endpoint(value).is_err(), "{value}");
        }
        let error = endpoint("https://user:pw@api.example.com").unwrap_err();
        assert!(error.message().contains("user information"), "{error}");
    }
}
