//! The profile of a new user, read from token or userinfo claims.

use serde_json::{Map, Value};

use crate::ClaimNames;

/// Profile claims of a user at first sign-in. A missing or non-string
/// claim is empty, and a missing `email_verified` is false.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub email: String,
    pub email_verified: bool,
    pub picture: String,
    pub username: String,
}

impl Profile {
    /// Reads the claims named by `names` from `claims`.
    pub fn from_claims(claims: &Map<String, Value>, names: &ClaimNames) -> Self {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        // Some providers send `email_verified` as the string "true".
        let email_verified = match claims.get(&names.email_verified) {
            Some(Value::Bool(verified)) => *verified,
            Some(Value::String(verified)) => verified.eq_ignore_ascii_case("true"),
            _ => false,
        };
        Self {
            name: text(&names.name),
            email: text(&names.email),
            email_verified,
            picture: text(&names.picture),
            username: text(&names.username),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("expected an object"),
        }
    }

    #[test]
    fn standard_claims_are_read() {
        let claims = object(json!({
            "name": "Alice Liddell",
            "email": "alice@example.com",
            "email_verified": true,
            "picture": "https://example.com/a.png",
            "preferred_username": "alice",
        }));
        let profile = Profile::from_claims(&claims, &ClaimNames::default());
        assert_eq!(profile.name, "Alice Liddell");
        assert_eq!(profile.email, "alice@example.com");
        assert!(profile.email_verified);
        assert_eq!(profile.picture, "https://example.com/a.png");
        assert_eq!(profile.username, "alice");
    }

    #[test]
    fn missing_claims_are_empty() {
        let claims = object(json!({ "name": 5, "email_verified": "yes" }));
        assert_eq!(
            Profile::from_claims(&claims, &ClaimNames::default()),
            Profile::default()
        );
    }

    #[test]
    fn configured_names_are_used() {
        let names = ClaimNames {
            name: "display".into(),
            email: "mail".into(),
            picture: "avatar".into(),
            username: "login".into(),
            email_verified: "mail_ok".into(),
        };
        let claims = object(json!({
            "display": "Bob",
            "mail": "bob@example.com",
            "mail_ok": "TRUE",
            "avatar": "https://example.com/b.png",
            "login": "bob",
            "name": "ignored",
        }));
        let profile = Profile::from_claims(&claims, &names);
        assert_eq!(profile.name, "Bob");
        assert_eq!(profile.email, "bob@example.com");
        assert!(profile.email_verified);
        assert_eq!(profile.picture, "https://example.com/b.png");
        assert_eq!(profile.username, "bob");
    }
}
