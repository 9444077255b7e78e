//! Checks of request fields.

use agyn_core::{Error, Result};
use serde_json::{Map, Value};

use crate::model::Permission;

/// Maximum characters of an app or installation slug, so that it can
/// serve as a nickname.
const SLUG_MAX_CHARS: usize = 32;
const NAME_MAX_CHARS: usize = 64;
const DESCRIPTION_MAX_CHARS: usize = 1024;
const URL_MAX_CHARS: usize = 2048;
/// Maximum size of an installation's configuration as stored, in bytes of
/// compact JSON.
pub(crate) const CONFIGURATION_MAX_BYTES: usize = 64 << 10;
const METHOD_MAX_CHARS: usize = 128;

/// Checks a slug against `^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`.
pub(crate) fn slug<'a>(field: &str, slug: &'a str) -> Result<&'a str> {
    let bytes = slug.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= SLUG_MAX_CHARS
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if !valid {
        return Err(Error::invalid_field(
            field,
            "must be 1 to 32 characters of a-z, 0-9 and '-', starting and ending with a letter \
             or digit",
        ));
    }
    Ok(slug)
}

pub(crate) fn name(name: &str) -> Result<&str> {
    agyn_core::text::display_name("name", name, NAME_MAX_CHARS)
}

pub(crate) fn description(description: &str) -> Result<()> {
    if description.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(Error::invalid_field(
            "description",
            &format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks an icon: empty, or an `https` URL of at most 2,048 characters.
pub(crate) fn icon(icon: &str) -> Result<()> {
    if icon.is_empty() {
        return Ok(());
    }
    let uri = url("icon", icon, "must be empty or an https URL")?;
    if uri.scheme_str() != Some("https") {
        return Err(Error::invalid_field(
            "icon",
            "must be empty or an https URL",
        ));
    }
    Ok(())
}

/// Checks an endpoint: empty, or an `http` or `https` base URL of at most
/// 2,048 characters, without credentials, query or fragment.
pub(crate) fn endpoint(endpoint: &str) -> Result<()> {
    if endpoint.is_empty() {
        return Ok(());
    }
    let problem = "must be empty or an http(s) base URL without credentials, query or fragment";
    let uri = url("endpoint", endpoint, problem)?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.query().is_some()
        || endpoint.contains('#')
    {
        return Err(Error::invalid_field("endpoint", problem));
    }
    Ok(())
}

/// Parses an absolute URL with a host and no user information.
fn url(field: &str, value: &str, problem: &str) -> Result<http::Uri> {
    if value.chars().count() > URL_MAX_CHARS {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {URL_MAX_CHARS} characters"),
        ));
    }
    let invalid = || Error::invalid_field(field, problem);
    let uri: http::Uri = value.parse().map_err(|_| invalid())?;
    let authority = uri.authority().ok_or_else(invalid)?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(invalid());
    }
    Ok(uri)
}

/// Parses declared permissions, dropping repeats, in a fixed order.
pub(crate) fn permissions(names: &[String]) -> Result<Vec<Permission>> {
    let mut permissions = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let Some(permission) = Permission::parse(name) else {
            return Err(Error::invalid_field(
                &format!("permissions[{index}]"),
                &format!(
                    "unknown permission {name:?}; use thread:create, thread:write or \
                     participant:add"
                ),
            ));
        };
        permissions.push(permission);
    }
    permissions.sort();
    permissions.dedup();
    Ok(permissions)
}

/// Serializes a configuration and checks its size.
pub(crate) fn configuration(configuration: &Map<String, Value>) -> Result<String> {
    let text = serde_json::to_string(configuration).expect("a JSON object serializes");
    if text.len() > CONFIGURATION_MAX_BYTES {
        return Err(Error::invalid_field(
            "configuration",
            &format!(
                "is {} bytes as JSON; the maximum is {CONFIGURATION_MAX_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(text)
}

/// Returns whether `method` matches `^[A-Za-z][A-Za-z0-9_]{0,127}$`.
pub(crate) fn is_proxy_method(method: &str) -> bool {
    let bytes = method.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= METHOD_MAX_CHARS
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_pattern() {
        for good in ["a", "a1", "my-app", &"a".repeat(32)] {
            assert!(slug("slug", good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(33), "a.b"] {
            assert!(slug("slug", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoint_and_icon_urls() {
        for good in ["", "http://127.0.0.1:8080", "https://app.example.com/api/"] {
            assert!(endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x",
            "app.example.com",
            "https://u@x",
            "https://x?a=1",
            "https://x/#f",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        assert!(icon("https://cdn.example.com/i.png").is_ok());
        assert!(icon("http://cdn.example.com/i.png").is_err());
        assert!(icon(&format!("https://x/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn permissions_parse_and_dedupe() {
        let names = ["participant:add", "thread:create", "thread:create"].map(String::from);
        assert_eq!(
            permissions(&names).unwrap(),
            vec![Permission::ThreadCreate, Permission::ParticipantAdd]
        );
        let error = permissions(&["thread:delete".to_string()]).unwrap_err();
        assert!(error.message().starts_with("permissions[0]: unknown"));
    }

    #[test]
    fn proxy_method_pattern() {
        assert!(is_proxy_method("Echo"));
        assert!(is_proxy_method("get_status2"));
        assert!(is_proxy_method(&"a".repeat(128)));
        for bad in ["", "1a", "a-b", "a/b", "_a", &"a".repeat(129)] {
            assert!(!is_proxy_method(bad), "{bad}");
        }
    }
}
