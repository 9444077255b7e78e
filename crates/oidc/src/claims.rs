//! Checks of the registered claims of a verified token (RFC 7519,
//! section 4.1).

use serde_json::{Map, Value};

/// Clock skew allowed between the issuer and this server, in seconds.
pub(crate) const LEEWAY_SECS: f64 = 60.0;

/// Checks `iss`, `exp`, `nbf`, `iat`, `aud` and `sub` at time `now`
/// (seconds since the Unix epoch) and returns the subject. The error is a
/// reason for the debug log; callers never show it to the client.
pub(crate) fn check(
    claims: &Map<String, Value>,
    issuer: &str,
    audience: Option<&str>,
    now: f64,
) -> Result<String, &'static str> {
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err("iss is not the configured issuer");
    }
    let expires = numeric_date(claims, "exp")?.ok_or("exp is missing")?;
    if expires + LEEWAY_SECS < now {
        return Err("token expired");
    }
    if numeric_date(claims, "nbf")?.is_some_and(|not_before| not_before > now + LEEWAY_SECS) {
        return Err("token is not valid yet (nbf)");
    }
    if numeric_date(claims, "iat")?.is_some_and(|issued| issued > now + LEEWAY_SECS) {
        return Err("token is issued in the future (iat)");
    }
    if let Some(audience) = audience {
        let contained = match claims.get("aud") {
            Some(Value::String(value)) => value == audience,
            Some(Value::Array(values)) => values.iter().any(|value| value == audience),
            _ => false,
        };
        if !contained {
            return Err("aud does not contain the configured audience");
        }
    }
    match claims.get("sub") {
        Some(Value::String(subject)) if !subject.is_empty() => Ok(subject.clone()),
        _ => Err("sub is missing or empty"),
    }
}

/// Reads a NumericDate claim: absent is `None`, anything but a JSON
/// number is an error.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, &'static str> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or("a time claim (exp, nbf or iat) is not a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISSUER: &str = "https://id.example.com";
    const NOW: f64 = 1_700_000_000.0;

    fn claims(value: Value) -> Map<String, Value> {
        let Value::Object(mut map) = json!({ "iss": ISSUER, "sub": "s1", "exp": NOW + 300.0 })
        else {
            unreachable!()
        };
        let Value::Object(extra) = value else {
            panic!("claims must be an object")
        };
        map.extend(extra);
        map
    }

    fn check_at_now(value: Value, audience: Option<&str>) -> Result<String, &'static str> {
        check(&claims(value), ISSUER, audience, NOW)
    }

    #[test]
    fn valid_claims_return_subject() {
        assert_eq!(check_at_now(json!({}), None), Ok("s1".to_string()));
    }

    #[test]
    fn time_claims_honour_leeway() {
        assert!(check_at_now(json!({ "exp": NOW - 59.0 }), None).is_ok());
        assert_eq!(
            check_at_now(json!({ "exp": NOW - 61.0 }), None),
            Err("token expired")
        );
        assert!(check_at_now(json!({ "nbf": NOW + 59.0 }), None).is_ok());
        assert_eq!(
            check_at_now(json!({ "nbf": NOW + 61.0 }), None),
            Err("token is not valid yet (nbf)")
        );
        assert!(check_at_now(json!({ "iat": NOW + 59.0 }), None).is_ok());
        assert_eq!(
            check_at_now(json!({ "iat": NOW + 61.0 }), None),
            Err("token is issued in the future (iat)")
        );
        assert!(check_at_now(json!({ "exp": "tomorrow" }), None).is_err());
        assert!(check_at_now(json!({ "nbf": null }), None).is_err());
    }

    #[test]
    fn exp_is_required() {
        let mut map = claims(json!({}));
        map.remove("exp");
        assert_eq!(check(&map, ISSUER, None, NOW), Err("exp is missing"));
    }

    #[test]
    fn iss_must_match_exactly() {
        for iss in [
            json!("https://id.example.com/"),
            json!([ISSUER]),
            json!(null),
        ] {
            assert_eq!(
                check_at_now(json!({ "iss": iss }), None),
                Err("iss is not the configured issuer"),
                "{iss}"
            );
        }
    }

    #[test]
    fn aud_may_be_string_or_array() {
        assert!(check_at_now(json!({ "aud": "agyn" }), Some("agyn")).is_ok());
        assert!(check_at_now(json!({ "aud": ["other", "agyn"] }), Some("agyn")).is_ok());
        let wrong = Err("aud does not contain the configured audience");
        assert_eq!(check_at_now(json!({ "aud": "other" }), Some("agyn")), wrong);
        assert_eq!(
            check_at_now(json!({ "aud": ["other"] }), Some("agyn")),
            wrong
        );
        assert_eq!(check_at_now(json!({}), Some("agyn")), wrong);
        assert!(check_at_now(json!({ "aud": "other" }), None).is_ok());
    }

    #[test]
    fn sub_is_required() {
        let missing = Err("sub is missing or empty");
        assert_eq!(check_at_now(json!({ "sub": "" }), None), missing);
        assert_eq!(check_at_now(json!({ "sub": 7 }), None), missing);
        let mut map = claims(json!({}));
        map.remove("sub");
        assert_eq!(check(&map, ISSUER, None, NOW), missing);
    }
}
