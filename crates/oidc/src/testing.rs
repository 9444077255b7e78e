//! An OIDC issuer on loopback for tests: discovery, JWKS and userinfo
//! over real HTTP, with signing keys generated at run time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

/// Path of the issuer on its server, so that tests cover an issuer URL
/// with a path.
const ISSUER_PATH: &str = "/realms/agyn";

/// RSA keys generated so far, by index. Generating a 2048-bit key is
/// slow next to a test, so each index is generated once per process.
static RSA_KEYS: Mutex<Vec<Arc<rsa::RsaPrivateKey>>> = Mutex::new(Vec::new());

fn rsa_key(index: usize) -> Arc<rsa::RsaPrivateKey> {
    let mut keys = RSA_KEYS.lock().unwrap_or_else(|poison| poison.into_inner());
    while keys.len() <= index {
        let key =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key");
        keys.push(Arc::new(key));
    }
    Arc::clone(&keys[index])
}

/// A private key that signs tokens, with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    public_key_pem: Option<String>,
}

impl SigningKey {
    /// Returns an RSA 2048 key for RS256. Keys with the same `index` are
    /// the same key within one process.
    pub fn rsa(kid: &str, index: usize) -> Self {
        let key = rsa_key(index);
        let der = key.to_pkcs1_der().expect("encode the RSA key");
        let public_key_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("encode the RSA public key");
        Self {
            kid: kid.to_string(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA",
                "use": "sig",
                "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            }),
            public_key_pem: Some(public_key_pem),
        }
    }

    /// Generates a P-256 key for ES256.
    pub fn p256(kid: &str) -> Self {
        let random = ring::rand::SystemRandom::new();
        let algorithm = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, &random).expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), &random)
            .expect("parse the P-256 key");
        // The public key is the uncompressed point: 0x04, x, y.
        let point = pair.public_key().as_ref();
        Self {
            kid: kid.to_string(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC",
                "crv": "P-256",
                "use": "sig",
                "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
            public_key_pem: None,
        }
    }

    /// Generates an Ed25519 key for EdDSA.
    pub fn ed25519(kid: &str) -> Self {
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random).expect("generate an Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse the Ed25519 key");
        Self {
            kid: kid.to_string(),
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "use": "sig",
                "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
            public_key_pem: None,
        }
    }

    /// Signs with `algorithm` instead, such as PS256 or RS512 for an RSA
    /// key. The JWK stays without `alg`.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Returns the public key as a JWK.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// Returns the SubjectPublicKeyInfo PEM of an RSA key.
    pub fn rsa_public_key_pem(&self) -> Option<&str> {
        self.public_key_pem.as_deref()
    }

    /// Signs `claims` into a compact JWT whose header names this key's
    /// `kid` and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign the token")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

#[derive(Default)]
struct IssuerState {
    issuer: String,
    /// `issuer` of the discovery document when it differs from the URL.
    discovery_issuer: Mutex<Option<String>>,
    jwks: Mutex<Vec<Value>>,
    profiles: Mutex<HashMap<String, Value>>,
    /// HTTP status the userinfo endpoint returns instead of a profile;
    /// zero serves profiles.
    userinfo_failure: AtomicU16,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    userinfo_calls: AtomicUsize,
}

/// An OIDC issuer served on `127.0.0.1` from its own thread, at
/// `http://127.0.0.1:<port>/realms/agyn`.
///
/// Its userinfo endpoint does not verify the bearer token: it returns the
/// profile stored for the token's `sub`, plus `sub` itself.
pub struct TestIssuer {
    state: Arc<IssuerState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestIssuer {
    /// Starts the issuer with an empty JWKS.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test issuer");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let port = listener.local_addr().expect("listener address").port();
        let state = Arc::new(IssuerState {
            issuer: format!("http://127.0.0.1:{port}{ISSUER_PATH}"),
            ..Default::default()
        });
        let app = axum::Router::new()
            .route(
                &format!("{ISSUER_PATH}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(&format!("{ISSUER_PATH}/jwks"), get(jwks))
            .route(&format!("{ISSUER_PATH}/userinfo"), get(userinfo))
            .with_state(Arc::clone(&state));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("start the test issuer runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("register the listener");
                tokio::select! {
                    result = axum::serve(listener, app) => result.expect("serve the test issuer"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime closes every open connection.
        });
        Self {
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// Replaces the published JWKS with the public keys of `keys`.
    pub fn publish(&self, keys: &[&SigningKey]) {
        let jwks = keys.iter().map(|key| key.jwk()).collect();
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// Makes the discovery document name `issuer` instead of this
    /// issuer's URL.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.state.discovery_issuer.lock().unwrap() = Some(issuer.to_string());
    }

    /// Stores the userinfo claims of `subject`.
    pub fn set_profile(&self, subject: &str, profile: Value) {
        self.state
            .profiles
            .lock()
            .unwrap()
            .insert(subject.to_string(), profile);
    }

    /// Makes the userinfo endpoint return `status`, or serve profiles
    /// again with `None`.
    pub fn fail_userinfo(&self, status: Option<u16>) {
        self.state
            .userinfo_failure
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Claims of a valid token for `subject`: `iss`, `sub`, `iat` now and
    /// `exp` in five minutes.
    pub fn claims(&self, subject: &str) -> Value {
        let now = unix_now();
        json!({ "iss": self.issuer(), "sub": subject, "iat": now, "exp": now + 300 })
    }

    /// Signs a valid token for `subject` with `key`.
    pub fn token(&self, key: &SigningKey, subject: &str) -> String {
        key.sign(&self.claims(subject))
    }

    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn userinfo_calls(&self) -> usize {
        self.state.userinfo_calls.load(Ordering::SeqCst)
    }

    /// Stops serving; later requests fail to connect.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the test issuer thread panicked");
        }
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Json<Value> {
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let issuer = state
        .discovery_issuer
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| state.issuer.clone());
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/jwks", state.issuer),
        "userinfo_endpoint": format!("{}/userinfo", state.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> Json<Value> {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = state.jwks.lock().unwrap().clone();
    Json(json!({ "keys": keys }))
}

async fn userinfo(State(state): State<Arc<IssuerState>>, headers: HeaderMap) -> Response {
    state.userinfo_calls.fetch_add(1, Ordering::SeqCst);
    let failure = state.userinfo_failure.load(Ordering::SeqCst);
    if failure != 0 {
        let status = StatusCode::from_u16(failure).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return status.into_response();
    }
    let Some(subject) = bearer_subject(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut profile = state
        .profiles
        .lock()
        .unwrap()
        .get(&subject)
        .cloned()
        .unwrap_or_else(|| json!({}));
    profile["sub"] = Value::String(subject);
    Json(profile).into_response()
}

/// Reads `sub` from the unverified payload of the bearer token.
fn bearer_subject(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("sub")?.as_str().map(str::to_string)
}
