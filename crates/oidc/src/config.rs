//! OIDC settings and their validation.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

/// Source of a new user's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileSource {
    /// The claims of the access token itself.
    Token,
    /// The issuer's userinfo endpoint, called with the access token.
    #[default]
    Userinfo,
}

impl ProfileSource {
    /// Parses `token` or `userinfo`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "token" => Some(Self::Token),
            "userinfo" => Some(Self::Userinfo),
            _ => None,
        }
    }
}

/// Names of the claims that fill a new user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    pub name: String,
    pub email: String,
    pub picture: String,
    pub username: String,
    pub email_verified: String,
}

impl Default for ClaimNames {
    /// Returns the standard claim names of OpenID Connect Core 1.0,
    /// section 5.1.
    fn default() -> Self {
        Self {
            name: "name".to_string(),
            email: "email".to_string(),
            picture: "picture".to_string(),
            username: "preferred_username".to_string(),
            email_verified: "email_verified".to_string(),
        }
    }
}

/// Settings of OIDC sign-in against one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer URL, compared byte for byte with the `iss` claim and with
    /// the discovery document's `issuer`.
    pub issuer: String,
    /// When set, the `aud` claim must contain this value.
    pub audience: Option<String>,
    pub profile_source: ProfileSource,
    pub claims: ClaimNames,
}

/// An OIDC setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig(String);

impl InvalidConfig {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidConfig {}

impl OidcConfig {
    /// Creates a configuration for `issuer` with no audience, the userinfo
    /// profile source and the standard claim names.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: None,
            profile_source: ProfileSource::default(),
            claims: ClaimNames::default(),
        }
    }

    /// Checks the issuer URL and the claim names.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check_issuer(&self.issuer)?;
        if self.audience.as_deref() == Some("") {
            return Err(InvalidConfig(
                "invalid oidc_audience \"\": leave it unset to accept any audience".to_string(),
            ));
        }
        let names = [
            ("oidc_claim_name", &self.claims.name),
            ("oidc_claim_email", &self.claims.email),
            ("oidc_claim_picture", &self.claims.picture),
            ("oidc_claim_username", &self.claims.username),
            ("oidc_claim_email_verified", &self.claims.email_verified),
        ];
        for (key, value) in names {
            if value.is_empty() {
                return Err(InvalidConfig(format!("invalid {key} \"\": name a claim")));
            }
        }
        Ok(())
    }
}

/// Accepts an `https` URL, or an `http` URL whose host is a loopback
/// address or `localhost`, with no query or fragment.
fn check_issuer(issuer: &str) -> Result<(), InvalidConfig> {
    let invalid =
        |problem: &str| InvalidConfig(format!("invalid oidc_issuer {issuer:?}: {problem}"));
    let url = Url::parse(issuer).map_err(|error| invalid(&format!("not a URL ({error})")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("an issuer URL has no query or fragment"));
    }
    check_endpoint_url(&url).map_err(invalid)
}

/// Checks that the platform may send access tokens to `url`: HTTPS, or
/// plain HTTP on loopback only.
pub(crate) fn check_endpoint_url(url: &Url) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("use https; plain http is accepted only for loopback hosts"),
        _ => Err("use an https URL"),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // `host_str` keeps the brackets around an IPv6 address.
    let address = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || address
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_schemes() {
        for good in [
            "https://id.example.com",
            "https://id.example.com/realms/agyn/",
            "http://127.0.0.1:8080/realms/agyn",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            assert_eq!(check_issuer(good), Ok(()), "{good}");
        }
        let error = check_issuer("http://id.example.com").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid oidc_issuer \"http://id.example.com\": use https; plain http is accepted only for loopback hosts"
        );
        let error = check_issuer("id.example.com").unwrap_err();
        assert!(error.to_string().contains("not a URL"), "{error}");
        let error = check_issuer("https://id.example.com/?tenant=1").unwrap_err();
        assert!(
            error.to_string().contains("no query or fragment"),
            "{error}"
        );
        let error = check_issuer("ftp://id.example.com").unwrap_err();
        assert!(error.to_string().ends_with("use an https URL"), "{error}");
    }

    #[test]
    fn empty_claim_name_is_rejected() {
        let mut config = OidcConfig::new("https://id.example.com");
        assert_eq!(config.validate(), Ok(()));
        config.claims.email = String::new();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid oidc_claim_email \"\": name a claim"
        );
    }

    #[test]
    fn profile_source_parses() {
        assert_eq!(ProfileSource::parse("token"), Some(ProfileSource::Token));
        assert_eq!(
            ProfileSource::parse("userinfo"),
            Some(ProfileSource::Userinfo)
        );
        assert_eq!(ProfileSource::parse("id_token"), None);
    }
}
