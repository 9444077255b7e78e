//! Input checks. Each returns `invalid_argument` naming the request field.

use std::collections::{BTreeMap, HashSet};

use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_core::{Error, Result};

const NAME_MAX_CHARS: usize = 64;
const MAX_LABELS: usize = 32;
const LABEL_KEY_MAX_CHARS: usize = 63;
const LABEL_VALUE_MAX_CHARS: usize = 128;
const MAX_CAPABILITIES: usize = 32;
const CAPABILITY_MAX_CHARS: usize = 32;
const ENDPOINT_MAX_CHARS: usize = 2048;
/// Upper bound of short runner-supplied strings (instance ids, sizes,
/// certificate serials).
const TOKEN_MAX_CHARS: usize = 256;
const FAILURE_MESSAGE_MAX_CHARS: usize = 4096;
const MAX_CONTAINERS: usize = 64;

/// Checks a runner name: 1 to 64 characters after trimming.
pub(crate) fn runner_name(name: &str) -> Result<&str> {
    agyn_core::text::display_name("name", name, NAME_MAX_CHARS)
}

/// Checks labels: at most 32, keys matching `^[a-z0-9][a-z0-9._/-]{0,62}$`,
/// values of at most 128 characters.
pub(crate) fn labels(field: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid_field(
            field,
            &format!("must have at most {MAX_LABELS} entries"),
        ));
    }
    for (key, value) in labels {
        let tail_ok = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '/' | '-');
        let valid_key = key.len() <= LABEL_KEY_MAX_CHARS
            && key.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && key.chars().all(tail_ok);
        if !valid_key {
            return Err(Error::invalid_field(
                field,
                &format!("key {key:?} must match ^[a-z0-9][a-z0-9._/-]{{0,62}}$"),
            ));
        }
        if value.chars().count() > LABEL_VALUE_MAX_CHARS {
            return Err(Error::invalid_field(
                field,
                &format!("value of {key:?} must be at most {LABEL_VALUE_MAX_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// Checks capabilities: at most 32, each matching
/// `^[a-z0-9][a-z0-9_-]{0,31}$`, without duplicates.
pub(crate) fn capabilities(field: &str, capabilities: &[String]) -> Result<()> {
    if capabilities.len() > MAX_CAPABILITIES {
        return Err(Error::invalid_field(
            field,
            &format!("must have at most {MAX_CAPABILITIES} entries"),
        ));
    }
    let mut seen = HashSet::new();
    for capability in capabilities {
        let tail_ok = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-');
        let valid = capability.len() <= CAPABILITY_MAX_CHARS
            && capability.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && capability.chars().all(tail_ok);
        if !valid {
            return Err(Error::invalid_field(
                field,
                &format!("{capability:?} must match ^[a-z0-9][a-z0-9_-]{{0,31}}$"),
            ));
        }
        if !seen.insert(capability.as_str()) {
            return Err(Error::invalid_field(
                field,
                &format!("{capability:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Checks a runner endpoint: an `https://host:port` URL without a path,
/// query or user information.
pub(crate) fn endpoint(field: &str, endpoint: &str) -> Result<()> {
    let invalid = || Error::invalid_field(field, "must be an https://host:port URL");
    if endpoint.len() > ENDPOINT_MAX_CHARS {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {ENDPOINT_MAX_CHARS} characters"),
        ));
    }
    let uri: http::Uri = endpoint.parse().map_err(|_| invalid())?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid());
    }
    let authority = uri.authority().ok_or_else(invalid)?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(invalid());
    }
    let path_empty = matches!(uri.path(), "" | "/");
    if !path_empty || uri.query().is_some() || endpoint.contains('#') {
        return Err(invalid());
    }
    // `http::Uri` keeps any digits as the port, so the range is checked here.
    let port = authority
        .port()
        .ok_or_else(|| Error::invalid_field(field, "must name a port: https://host:port"))?;
    let port = port.as_str();
    match port.parse::<u16>() {
        Ok(port) if port > 0 => {}
        _ => {
            return Err(Error::invalid_field(
                field,
                &format!("port {port:?} must be a number from 1 to 65535"),
            ));
        }
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(address) = host.parse::<std::net::IpAddr>()
        && address.is_unspecified()
    {
        return Err(Error::invalid_field(
            field,
            &format!("{host} is not an address the platform can dial; name the runner's host"),
        ));
    }
    Ok(())
}

/// Checks a short runner-supplied string such as an instance id.
pub(crate) fn short_text(field: &str, value: &str) -> Result<()> {
    if value.chars().count() > TOKEN_MAX_CHARS {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {TOKEN_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks a required short string.
pub(crate) fn required_text(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_field(field, "is required"));
    }
    short_text(field, value)
}

pub(crate) fn failure_message(field: &str, value: &str) -> Result<()> {
    if value.chars().count() > FAILURE_MESSAGE_MAX_CHARS {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {FAILURE_MESSAGE_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks a container list: at most 64 containers with unique, non-empty
/// names.
pub(crate) fn containers(field: &str, containers: &[pb::Container]) -> Result<()> {
    if containers.len() > MAX_CONTAINERS {
        return Err(Error::invalid_field(
            field,
            &format!("must have at most {MAX_CONTAINERS} containers"),
        ));
    }
    let mut names = HashSet::new();
    for (index, container) in containers.iter().enumerate() {
        let name_field = format!("{field}[{index}].name");
        required_text(&name_field, &container.name)?;
        if !names.insert(container.name.as_str()) {
            return Err(Error::invalid_field(
                &name_field,
                &format!("container name {:?} is used twice", container.name),
            ));
        }
        short_text(&format!("{field}[{index}].image"), &container.image)?;
        short_text(&format!("{field}[{index}].reason"), &container.reason)?;
        failure_message(&format!("{field}[{index}].message"), &container.message)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_needs_https_host() {
        for good in [
            "https://runner.example.com:8443",
            "https://10.0.0.1:443/",
            "https://[::1]:8443",
        ] {
            assert!(endpoint("endpoint", good).is_ok(), "{good}");
        }
        for bad in [
            "http://runner:8443",
            "runner:8443",
            "https://",
            "https://runner:8443/path",
            "https://user@runner:8443",
            "https://runner:8443?x=1",
            "https://runner:8443#part",
            "https://runner",
            "https://runner:0",
            "https://runner:99999",
            "https://0.0.0.0:8443",
            "https://[::]:8443",
            "",
        ] {
            assert!(endpoint("endpoint", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_follow_pattern() {
        let mut map = BTreeMap::new();
        map.insert("zone/a.b-c_d".to_string(), "x".to_string());
        assert!(labels("labels", &map).is_ok());
        for bad in ["", "Zone", "-a", &"a".repeat(64)] {
            let map = BTreeMap::from([(bad.to_string(), String::new())]);
            assert!(labels("labels", &map).is_err(), "{bad:?}");
        }
        let long_value = BTreeMap::from([("a".to_string(), "v".repeat(129))]);
        assert!(labels("labels", &long_value).is_err());
    }

    #[test]
    fn capabilities_follow_pattern() {
        assert!(capabilities("capabilities", &["gpu".into(), "k8s_1-x".into()]).is_ok());
        for bad in ["GPU", "_x", "a.b", &"a".repeat(33)] {
            assert!(
                capabilities("capabilities", &[bad.to_string()]).is_err(),
                "{bad:?}"
            );
        }
        assert!(capabilities("capabilities", &["a".into(), "a".into()]).is_err());
    }
}
