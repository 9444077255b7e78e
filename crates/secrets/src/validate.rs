//! Checks of request fields. Each error names the field and never echoes
//! a value, token or password.

use agyn_core::id::parse_id;
use agyn_core::text::display_name;
use agyn_core::{Error, Result, Secret};
use reqwest::Url;

use crate::model::RemoteRef;

/// Maximum length of a secret provider name, in characters.
pub const PROVIDER_NAME_MAX_CHARS: usize = 64;
/// Maximum length of a secret name, in characters.
pub const SECRET_NAME_MAX_CHARS: usize = 128;
/// Maximum length of a description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 1_024;
/// Maximum length of a Vault address, in characters.
pub const ADDRESS_MAX_CHARS: usize = 2_048;
/// Maximum length of a Vault token, in bytes.
pub const TOKEN_MAX_BYTES: usize = 8 * 1024;
/// Maximum size of a secret value, in bytes.
pub const SECRET_VALUE_MAX_BYTES: usize = 64 * 1024;
/// Maximum size of an image pull password, in bytes.
pub const PASSWORD_MAX_BYTES: usize = 8 * 1024;
/// Maximum length of a remote name, in characters.
pub const REMOTE_NAME_MAX_CHARS: usize = 1_024;
/// Maximum length of a registry user name, in characters.
pub const USERNAME_MAX_CHARS: usize = 256;
/// Maximum length of a registry host name, in characters (the DNS limit).
const HOST_MAX_CHARS: usize = 253;

/// Trims and checks a secret provider name.
pub fn provider_name(name: &str) -> Result<&str> {
    display_name("name", name, PROVIDER_NAME_MAX_CHARS)
}

/// Trims and checks a secret name.
pub fn secret_name(name: &str) -> Result<&str> {
    display_name("name", name, SECRET_NAME_MAX_CHARS)
}

/// Checks a free-form description: at most 1,024 characters, no NUL.
pub fn description(description: &str) -> Result<&str> {
    if description.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(Error::invalid_field(
            "description",
            &format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    if description.contains('\0') {
        return Err(Error::invalid_field(
            "description",
            "must not contain NUL characters",
        ));
    }
    Ok(description)
}

/// Checks a Vault address: an absolute http or https URL with a host and
/// without user info, query or fragment. Returns it trimmed.
pub fn vault_address(address: &str) -> Result<&str> {
    const FIELD: &str = "config.vault.address";
    let address = address.trim();
    if address.is_empty() {
        return Err(Error::invalid_field(FIELD, "is required"));
    }
    if address.chars().count() > ADDRESS_MAX_CHARS {
        return Err(Error::invalid_field(
            FIELD,
            &format!("must be at most {ADDRESS_MAX_CHARS} characters"),
        ));
    }
    let url = Url::parse(address)
        .map_err(|_| Error::invalid_field(FIELD, "must be an absolute http or https URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid_field(FIELD, "must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid_field(FIELD, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid_field(
            FIELD,
            "must not contain user info; put the token in config.vault.token",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::invalid_field(
            FIELD,
            "must not have a query or fragment",
        ));
    }
    Ok(address)
}

/// Checks a Vault token: 1 to 8,192 printable ASCII characters, the bytes
/// an HTTP header value can carry unchanged.
pub fn vault_token(token: &Secret<String>) -> Result<()> {
    const FIELD: &str = "config.vault.token";
    let token = token.expose();
    if token.is_empty() {
        return Err(Error::invalid_field(FIELD, "is required"));
    }
    if token.len() > TOKEN_MAX_BYTES || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(Error::invalid_field(
            FIELD,
            &format!("must be 1 to {TOKEN_MAX_BYTES} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// Checks a value or password of 1 byte to `max_bytes`, reported as the
/// field `value`.
pub fn value(value: &Secret<String>, max_bytes: usize) -> Result<()> {
    let length = value.expose().len();
    if length == 0 {
        return Err(Error::invalid_field("value", "must not be empty"));
    }
    if length > max_bytes {
        return Err(Error::invalid_field(
            "value",
            &format!("must be at most {max_bytes} bytes"),
        ));
    }
    Ok(())
}

/// Checks a remote reference and returns it with the provider id in
/// canonical form. Fields are reported as `remote.<field>`.
pub fn remote(remote: &RemoteRef) -> Result<RemoteRef> {
    let secret_provider_id = parse_id("remote.secret_provider_id", &remote.secret_provider_id)?;
    remote_name(&remote.remote_name)?;
    Ok(RemoteRef {
        secret_provider_id,
        remote_name: remote.remote_name.clone(),
    })
}

fn remote_name(name: &str) -> Result<()> {
    const FIELD: &str = "remote.remote_name";
    if name.is_empty() {
        return Err(Error::invalid_field(FIELD, "is required"));
    }
    if name.chars().count() > REMOTE_NAME_MAX_CHARS {
        return Err(Error::invalid_field(
            FIELD,
            &format!("must be at most {REMOTE_NAME_MAX_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            FIELD,
            "must not contain control characters",
        ));
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() < 3 || segments.iter().any(|segment| segment.is_empty()) {
        return Err(Error::invalid_field(
            FIELD,
            "must be <mount>/<path>/<key> with at least three non-empty segments",
        ));
    }
    if segments
        .iter()
        .any(|segment| *segment == "." || *segment == "..")
    {
        return Err(Error::invalid_field(
            FIELD,
            "must not contain \".\" or \"..\" segments",
        ));
    }
    Ok(())
}

/// Checks a registry: a lowercase host name or IPv4 address with an
/// optional port, such as `ghcr.io` or `registry.example.com:5000`.
pub fn registry(registry: &str) -> Result<&str> {
    const FIELD: &str = "registry";
    if registry.is_empty() {
        return Err(Error::invalid_field(FIELD, "is required"));
    }
    if registry.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return Err(Error::invalid_field(FIELD, "must be lowercase"));
    }
    let not_a_host = || {
        Error::invalid_field(
            FIELD,
            "must be a host name with an optional port and no scheme or path, such as ghcr.io or registry.example.com:5000",
        )
    };
    if registry.contains('/') {
        return Err(not_a_host());
    }
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if !is_host_name(host) {
        return Err(not_a_host());
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|byte| byte.is_ascii_digit())
            && port
                .parse::<u32>()
                .is_ok_and(|port| (1..=65_535).contains(&port));
        if !valid {
            return Err(Error::invalid_field(
                FIELD,
                "port must be a number from 1 to 65535",
            ));
        }
    }
    Ok(registry)
}

/// Returns whether `host` is dot-separated labels of `[a-z0-9-]`, each 1 to
/// 63 characters that neither start nor end with `-`.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= HOST_MAX_CHARS
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        })
}

/// Checks a registry user name: 1 to 256 characters, no control
/// characters and no colon. It is not trimmed, because registries compare it exactly.
pub fn username(username: &str) -> Result<&str> {
    const FIELD: &str = "username";
    if username.is_empty() {
        return Err(Error::invalid_field(FIELD, "is required"));
    }
    if username.chars().count() > USERNAME_MAX_CHARS {
        return Err(Error::invalid_field(
            FIELD,
            &format!("must be at most {USERNAME_MAX_CHARS} characters"),
        ));
    }
    if username.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            FIELD,
            "must not contain control characters",
        ));
    }
    // Registries take `user:password` in Basic authentication.
    if username.contains(':') {
        return Err(Error::invalid_field(FIELD, "must not contain ':'"));
    }
    Ok(username)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().message().to_string()
    }

    #[test]
    fn username_rejects_colons() {
        assert_eq!(message(username("a:b")), "username: must not contain ':'");
        assert_eq!(username("bot").unwrap(), "bot");
    }

    #[test]
    fn registry_accepts_hosts_and_ports() {
        for good in [
            "ghcr.io",
            "registry.example.com:5000",
            "localhost",
            "10.0.0.1:443",
            "a-b.c",
        ] {
            assert_eq!(registry(good).unwrap(), good);
        }
    }

    #[test]
    fn registry_rejects_bad_hosts() {
        assert_eq!(message(registry("GHCR.io")), "registry: must be lowercase");
        assert_eq!(message(registry("")), "registry: is required");
        for bad in [
            "https://ghcr.io",
            "ghcr.io/org",
            "-a.io",
            "a..io",
            "a_b.io",
            "ghcr.io:",
        ] {
            assert!(registry(bad).is_err(), "{bad} was accepted");
        }
        for bad_port in ["ghcr.io:0", "ghcr.io:65536", "ghcr.io:12a"] {
            assert_eq!(
                message(registry(bad_port)),
                "registry: port must be a number from 1 to 65535",
                "{bad_port}"
            );
        }
    }

    #[test]
    fn remote_name_needs_three_segments() {
        let reference = |name: &str| RemoteRef {
            secret_provider_id: "0190a2b4-1c2d-7e8f-9a0b-1c2d3e4f5a6b".to_string(),
            remote_name: name.to_string(),
        };
        assert!(remote(&reference("secret/app/key")).is_ok());
        assert!(remote(&reference("secret/team/app/key")).is_ok());
        for bad in [
            "secret/key",
            "secret//key",
            "/secret/app/key",
            "secret/app/",
        ] {
            assert_eq!(
                message(remote(&reference(bad))),
                "remote.remote_name: must be <mount>/<path>/<key> with at least three non-empty segments",
                "{bad}"
            );
        }
        assert_eq!(
            message(remote(&reference("secret/../key"))),
            "remote.remote_name: must not contain \".\" or \"..\" segments"
        );
        let bad_id = RemoteRef {
            secret_provider_id: "nope".to_string(),
            remote_name: "a/b/c".to_string(),
        };
        assert_eq!(
            message(remote(&bad_id)),
            "remote.secret_provider_id: must be a UUID"
        );
    }

    #[test]
    fn vault_address_rules() {
        assert_eq!(
            vault_address(" https://vault.example.com:8200 ").unwrap(),
            "https://vault.example.com:8200"
        );
        assert!(vault_address("http://127.0.0.1:8200/base/").is_ok());
        assert_eq!(
            message(vault_address("ftp://vault")),
            "config.vault.address: must use http or https"
        );
        assert_eq!(
            message(vault_address("vault.example.com")),
            "config.vault.address: must be an absolute http or https URL"
        );
        assert!(vault_address("https://user:pw@vault").is_err());
        assert!(vault_address("https://vault/?x=1").is_err());
        assert_eq!(
            message(vault_address("")),
            "config.vault.address: is required"
        );
    }

    #[test]
    fn vault_token_rules() {
        assert!(vault_token(&Secret::new("hvs.abc".to_string())).is_ok());
        assert_eq!(
            message(vault_token(&Secret::new(String::new()))),
            "config.vault.token: is required"
        );
        let error = message(vault_token(&Secret::new("a b".to_string())));
        assert_eq!(
            error,
            "config.vault.token: must be 1 to 8192 printable ASCII characters"
        );
        assert!(vault_token(&Secret::new("x".repeat(TOKEN_MAX_BYTES + 1))).is_err());
    }

    #[test]
    fn value_size_limits() {
        assert!(
            value(
                &Secret::new("x".repeat(PASSWORD_MAX_BYTES)),
                PASSWORD_MAX_BYTES
            )
            .is_ok()
        );
        assert_eq!(
            message(value(
                &Secret::new("x".repeat(PASSWORD_MAX_BYTES + 1)),
                PASSWORD_MAX_BYTES
            )),
            "value: must be at most 8192 bytes"
        );
        assert_eq!(
            message(value(&Secret::new(String::new()), SECRET_VALUE_MAX_BYTES)),
            "value: must not be empty"
        );
    }
}
