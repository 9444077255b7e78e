//! Token verification against a real issuer on loopback.

use agyn_core::error::Code;
use agyn_core::{Error, Secret};
use agyn_oidc::testing::{SigningKey, TestIssuer, unix_now};
use agyn_oidc::{OidcConfig, VerifiedToken, Verifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn verifier(issuer: &TestIssuer) -> Verifier {
    Verifier::new(OidcConfig::new(issuer.issuer())).unwrap()
}

async fn verify(verifier: &Verifier, token: &str) -> Result<VerifiedToken, Error> {
    verifier.verify(&Secret::new(token)).await
}

#[track_caller]
fn assert_invalid(result: Result<VerifiedToken, Error>, case: &str) {
    let error = result.expect_err(case);
    assert_eq!(error.code(), Code::Unauthenticated, "{case}: {error:?}");
    assert_eq!(error.message(), "invalid credential", "{case}");
}

#[track_caller]
fn assert_unavailable(result: Result<VerifiedToken, Error>, case: &str) {
    let error = result.expect_err(case);
    assert_eq!(error.code(), Code::Unavailable, "{case}: {error:?}");
    assert!(
        error
            .message()
            .starts_with("the OIDC issuer is unavailable"),
        "{case}: {}",
        error.message()
    );
}

/// Claims of a valid token for `subject`, with `changes` applied; a null
/// value removes the claim.
fn claims_with(issuer: &TestIssuer, subject: &str, changes: Value) -> Value {
    let mut claims = issuer.claims(subject);
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

#[tokio::test]
async fn rs256_token_verifies() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);

    let verified = verify(&verifier, &issuer.token(&key, "alice"))
        .await
        .unwrap();
    assert_eq!(verified.subject, "alice");
    assert_eq!(verified.claims["iss"], issuer.issuer());
    assert_eq!(issuer.discovery_fetches(), 1);
    assert_eq!(issuer.jwks_fetches(), 1);

    verify(&verifier, &issuer.token(&key, "bob")).await.unwrap();
    assert_eq!(issuer.discovery_fetches(), 1, "discovery is cached");
    assert_eq!(issuer.jwks_fetches(), 1, "the JWKS is cached");
}

#[tokio::test]
async fn es256_token_verifies() {
    let issuer = TestIssuer::start();
    let key = SigningKey::p256("ec-1");
    issuer.publish(&[&key]);
    let verified = verify(&verifier(&issuer), &issuer.token(&key, "carol"))
        .await
        .unwrap();
    assert_eq!(verified.subject, "carol");
}

#[tokio::test]
async fn other_accepted_algorithms_verify() {
    let issuer = TestIssuer::start();
    let keys = [
        SigningKey::rsa("rsa-ps256", 0).with_algorithm(Algorithm::PS256),
        SigningKey::rsa("rsa-rs384", 0).with_algorithm(Algorithm::RS384),
        SigningKey::rsa("rsa-rs512", 0).with_algorithm(Algorithm::RS512),
        SigningKey::ed25519("ed-1"),
    ];
    issuer.publish(&keys.iter().collect::<Vec<_>>());
    let verifier = verifier(&issuer);
    for key in &keys {
        let verified = verify(&verifier, &issuer.token(key, "dave")).await;
        assert!(verified.is_ok(), "{:?}: {verified:?}", key.algorithm());
    }
}

#[tokio::test]
async fn expiry_honours_leeway() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    let now = unix_now();

    let beyond = key.sign(&claims_with(&issuer, "erin", json!({ "exp": now - 120 })));
    assert_invalid(verify(&verifier, &beyond).await, "expired 120 s ago");
    let within = key.sign(&claims_with(&issuer, "erin", json!({ "exp": now - 30 })));
    assert!(verify(&verifier, &within).await.is_ok(), "expired 30 s ago");
    let missing = key.sign(&claims_with(&issuer, "erin", json!({ "exp": null })));
    assert_invalid(verify(&verifier, &missing).await, "no exp");
}

#[tokio::test]
async fn future_nbf_and_iat_are_rejected() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    let now = unix_now();

    let not_yet = key.sign(&claims_with(&issuer, "frank", json!({ "nbf": now + 120 })));
    assert_invalid(verify(&verifier, &not_yet).await, "nbf in 120 s");
    let within = key.sign(&claims_with(&issuer, "frank", json!({ "nbf": now + 30 })));
    assert!(verify(&verifier, &within).await.is_ok(), "nbf in 30 s");
    let issued_later = key.sign(&claims_with(&issuer, "frank", json!({ "iat": now + 120 })));
    assert_invalid(verify(&verifier, &issued_later).await, "iat in 120 s");
}

#[tokio::test]
async fn audience_must_match_when_configured() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let mut config = OidcConfig::new(issuer.issuer());
    config.audience = Some("agyn".to_string());
    let verifier = Verifier::new(config).unwrap();

    let cases = [
        ("aud string", json!({ "aud": "agyn" }), true),
        ("aud array", json!({ "aud": ["web", "agyn"] }), true),
        ("wrong aud", json!({ "aud": "web" }), false),
        ("wrong aud array", json!({ "aud": ["web", "cli"] }), false),
        ("no aud", json!({}), false),
    ];
    for (case, changes, accepted) in cases {
        let token = key.sign(&claims_with(&issuer, "grace", changes));
        let result = verify(&verifier, &token).await;
        if accepted {
            assert!(result.is_ok(), "{case}: {result:?}");
        } else {
            assert_invalid(result, case);
        }
    }

    // Without a configured audience any aud is accepted.
    let token = key.sign(&claims_with(&issuer, "grace", json!({ "aud": "web" })));
    assert!(verify(&self::verifier(&issuer), &token).await.is_ok());
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    let trailing_slash = format!("{}/", issuer.issuer());
    for iss in ["https://other.example.com", trailing_slash.as_str()] {
        let token = key.sign(&claims_with(&issuer, "heidi", json!({ "iss": iss })));
        assert_invalid(verify(&verifier, &token).await, iss);
    }
}

#[tokio::test]
async fn missing_subject_is_rejected() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    let no_sub = key.sign(&claims_with(&issuer, "ivan", json!({ "sub": null })));
    assert_invalid(verify(&verifier, &no_sub).await, "no sub");
    let empty_sub = key.sign(&claims_with(&issuer, "ivan", json!({ "sub": "" })));
    assert_invalid(verify(&verifier, &empty_sub).await, "empty sub");
}

#[tokio::test]
async fn unsigned_token_is_rejected() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa-1","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(issuer.claims("judy").to_string());
    let unsigned = format!("{header}.{payload}.");
    assert_invalid(verify(&verifier, &unsigned).await, "alg none");

    // The same payload with a valid RS256 signature, relabelled as none.
    let signed = issuer.token(&key, "judy");
    let signature = signed.rsplit('.').next().unwrap();
    let relabelled = format!("{header}.{payload}.{signature}");
    assert_invalid(
        verify(&verifier, &relabelled).await,
        "alg none with signature",
    );
}

#[tokio::test]
async fn hmac_with_public_key_is_rejected() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    // Warm the cache, so that a rejection cannot come from a missing key.
    verify(&verifier, &issuer.token(&key, "mallory"))
        .await
        .unwrap();

    let secrets = [
        key.rsa_public_key_pem().unwrap().as_bytes().to_vec(),
        key.jwk()["n"].as_str().unwrap().as_bytes().to_vec(),
    ];
    for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        for secret in &secrets {
            let mut header = Header::new(algorithm);
            header.kid = Some("rsa-1".to_string());
            let token = jsonwebtoken::encode(
                &header,
                &issuer.claims("mallory"),
                &EncodingKey::from_secret(secret),
            )
            .unwrap();
            assert_invalid(verify(&verifier, &token).await, &format!("{algorithm:?}"));
        }
    }
}

#[tokio::test]
async fn key_type_must_match_algorithm() {
    let issuer = TestIssuer::start();
    let rsa = SigningKey::rsa("rsa-1", 0);
    let ec = SigningKey::p256("ec-1");
    issuer.publish(&[&rsa, &ec]);
    let verifier = verifier(&issuer);
    // An EC signature presented under the RSA key's kid, and the reverse.
    let ec_as_rsa = ec.sign(&issuer.claims("oscar"));
    let (_, rest) = ec_as_rsa.split_once('.').unwrap();
    let header_json = json!({ "alg": "ES256", "kid": "rsa-1" }).to_string();
    let token = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header_json));
    assert_invalid(verify(&verifier, &token).await, "ES256 under an RSA kid");
    let rsa_as_ec = rsa.sign(&issuer.claims("oscar"));
    let (_, rest) = rsa_as_ec.split_once('.').unwrap();
    let header_json = json!({ "alg": "RS256", "kid": "ec-1" }).to_string();
    let token = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header_json));
    assert_invalid(verify(&verifier, &token).await, "RS256 under an EC kid");
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "a known kid never triggers a refetch"
    );
}

#[tokio::test]
async fn forged_signature_is_rejected() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    verify(&verifier, &issuer.token(&key, "peggy"))
        .await
        .unwrap();

    let forger = SigningKey::rsa("rsa-1", 1);
    assert_invalid(
        verify(&verifier, &issuer.token(&forger, "peggy")).await,
        "another RSA key under a published kid",
    );
    let mut tampered = issuer.token(&key, "peggy");
    let payload = URL_SAFE_NO_PAD.encode(issuer.claims("admin").to_string());
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_invalid(verify(&verifier, &tampered).await, "payload swapped");
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "a known kid never triggers a refetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_refetches_once() {
    let issuer = TestIssuer::start();
    let old = SigningKey::rsa("rsa-old", 0);
    issuer.publish(&[&old]);
    let verifier = verifier(&issuer);
    verify(&verifier, &issuer.token(&old, "quinn"))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 1);

    let new = SigningKey::rsa("rsa-new", 1);
    issuer.publish(&[&new]);
    let tokens: Vec<String> = (0..20)
        .map(|index| issuer.token(&new, &format!("user-{index}")))
        .collect();
    let results = verify_all(&verifier, &tokens).await;
    for (index, result) in results.into_iter().enumerate() {
        assert!(result.is_ok(), "token {index} with the new key: {result:?}");
    }
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch for the new kid");

    // The retired key is gone from the refetched set.
    assert_invalid(
        verify(&verifier, &issuer.token(&old, "quinn")).await,
        "token signed by the retired key",
    );

    // Unknown kids within 30 s of the refetch do not fetch again.
    let unpublished: Vec<SigningKey> = (0..20)
        .map(|index| SigningKey::p256(&format!("unknown-{index}")))
        .collect();
    let tokens: Vec<String> = unpublished
        .iter()
        .map(|key| issuer.token(key, "quinn"))
        .collect();
    for (index, result) in verify_all(&verifier, &tokens).await.into_iter().enumerate() {
        assert_invalid(result, &format!("unknown kid {index}"));
    }
    assert_eq!(issuer.jwks_fetches(), 2, "the refetch rate limit holds");
    assert_eq!(issuer.discovery_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_burst_fetches_once() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    verify(&verifier, &issuer.token(&key, "rupert"))
        .await
        .unwrap();

    let unpublished = SigningKey::ed25519("unpublished");
    let tokens: Vec<String> = (0..20)
        .map(|index| issuer.token(&unpublished, &format!("user-{index}")))
        .collect();
    for (index, result) in verify_all(&verifier, &tokens).await.into_iter().enumerate() {
        assert_invalid(result, &format!("token {index}"));
    }
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch for the whole burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fetch_is_shared() {
    let issuer = TestIssuer::start();
    let key = SigningKey::p256("ec-1");
    issuer.publish(&[&key]);
    let verifier = verifier(&issuer);
    let tokens: Vec<String> = (0..20)
        .map(|index| issuer.token(&key, &format!("user-{index}")))
        .collect();
    for (index, result) in verify_all(&verifier, &tokens).await.into_iter().enumerate() {
        assert!(result.is_ok(), "token {index}: {result:?}");
    }
    assert_eq!(issuer.discovery_fetches(), 1);
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn issuer_down_is_unavailable() {
    let mut issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let token = issuer.token(&key, "sybil");
    let cold = verifier(&issuer);
    let warm = verifier(&issuer);
    verify(&warm, &token).await.unwrap();
    issuer.stop();

    assert_unavailable(verify(&cold, &token).await, "no keys cached");
    // Cached keys keep verifying while the issuer is down.
    verify(&warm, &token).await.unwrap();
    // Without a fresh JWKS, a rotated key and a forgery look the same, so
    // an unknown kid is `unavailable` rather than `invalid credential`.
    let rotated = SigningKey::p256("ec-new");
    let rotated_token = rotated.sign(&claims_with(&issuer, "sybil", json!({})));
    assert_unavailable(verify(&warm, &rotated_token).await, "refetch failed");
    assert_unavailable(
        verify(&warm, &rotated_token).await,
        "refetch rate-limited after a failure",
    );
}

#[tokio::test]
async fn unreachable_issuer_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let verifier = Verifier::new(OidcConfig::new(format!("http://127.0.0.1:{port}"))).unwrap();
    let key = SigningKey::p256("ec-1");
    let token = key.sign(&json!({ "iss": format!("http://127.0.0.1:{port}"), "sub": "trent" }));
    assert_unavailable(verify(&verifier, &token).await, "nothing listens");
    let error = verifier.prefetch().await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
}

#[tokio::test]
async fn discovery_issuer_must_match() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    issuer.set_discovery_issuer("https://other.example.com");
    let verifier = verifier(&issuer);
    assert_unavailable(
        verify(&verifier, &issuer.token(&key, "uma")).await,
        "discovery names another issuer",
    );
    assert_eq!(issuer.jwks_fetches(), 0, "keys are not fetched");
}

#[tokio::test]
async fn prefetch_loads_keys() {
    let issuer = TestIssuer::start();
    let rsa = SigningKey::rsa("rsa-1", 0);
    let ec = SigningKey::p256("ec-1");
    issuer.publish(&[&rsa, &ec]);
    let verifier = verifier(&issuer);
    assert_eq!(verifier.prefetch().await.unwrap(), 2);
    verify(&verifier, &issuer.token(&ec, "victor"))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn userinfo_returns_profile() {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    issuer.set_profile(
        "wendy",
        json!({
            "name": "Wendy Darling",
            "email": "wendy@example.com",
            "email_verified": true,
            "picture": "https://example.com/wendy.png",
            "preferred_username": "wendy",
        }),
    );
    let verifier = verifier(&issuer);
    let token = Secret::new(issuer.token(&key, "wendy"));
    let profile = verifier.userinfo(&token, "wendy").await.unwrap();
    assert_eq!(profile.name, "Wendy Darling");
    assert_eq!(profile.email, "wendy@example.com");
    assert!(profile.email_verified);
    assert_eq!(profile.picture, "https://example.com/wendy.png");
    assert_eq!(profile.username, "wendy");

    let error = verifier.userinfo(&token, "someone-else").await.unwrap_err();
    assert_eq!(
        error.code(),
        Code::Unavailable,
        "response for another subject"
    );

    issuer.fail_userinfo(Some(500));
    let error = verifier.userinfo(&token, "wendy").await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    issuer.fail_userinfo(Some(401));
    let error = verifier.userinfo(&token, "wendy").await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    assert_eq!(issuer.userinfo_calls(), 4);
}

/// Verifies every token concurrently and returns the results in order.
async fn verify_all(verifier: &Verifier, tokens: &[String]) -> Vec<Result<VerifiedToken, Error>> {
    let tasks: Vec<_> = tokens
        .iter()
        .map(|token| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&Secret::new(token)).await })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("verification task panicked"));
    }
    results
}
