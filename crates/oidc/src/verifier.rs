//! Verification of access tokens against the issuer's published keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agyn_core::{Error, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::check_endpoint_url;
use crate::http::{FetchError, HttpClient};
use crate::keys::{ACCEPTED_ALGORITHMS, JwksDocument, KeySet, Lookup, VerifyingKey};
use crate::{InvalidConfig, OidcConfig, Profile, claims};

/// How long a discovery document is used before it is fetched again.
const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(3600);
/// How long a JWKS is used before the next verification fetches it again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Once keys are loaded, the JWKS is fetched at most once per this
/// interval, for an unknown `kid` and for age alike.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Bearer values longer than this are rejected before parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The claims of a token whose signature and registered claims are valid.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The `sub` claim, never empty.
    pub subject: String,
    pub claims: Map<String, Value>,
}

/// Verifies access tokens issued by one OIDC issuer.
///
/// The discovery document and the JWKS are fetched on first use and
/// cached. Concurrent verifications share one fetch. When a refresh of
/// either fails, the previous copy stays in use, so keys the issuer has
/// since retired keep verifying until a refresh succeeds.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: OidcConfig,
    discovery_url: Url,
    http: HttpClient,
    keys: RwLock<Arc<LoadedKeys>>,
    /// Serializes fetches of the discovery document and the JWKS.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Count of finished JWKS fetch attempts, read without the lock so that
    /// a task that waited for `refresh` can tell whether a fetch happened
    /// meanwhile.
    attempts: AtomicU64,
}

#[derive(Default)]
struct LoadedKeys {
    set: KeySet,
    /// `None` until the first successful fetch.
    fetched_at: Option<Instant>,
}

impl LoadedKeys {
    fn is_fresh(&self) -> bool {
        self.fetched_at
            .is_some_and(|fetched| fetched.elapsed() < JWKS_MAX_AGE)
    }
}

#[derive(Default)]
struct RefreshState {
    discovery: Option<(Discovery, Instant)>,
    /// Start of the last JWKS fetch made while keys were already loaded.
    last_refetch: Option<Instant>,
    /// Whether the last JWKS fetch attempt failed.
    last_attempt_failed: bool,
}

/// The discovery document members this crate reads.
#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
}

#[derive(Clone)]
struct Discovery {
    jwks_uri: Url,
    userinfo_endpoint: Option<Url>,
}

/// The JOSE header members this crate reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// Outcome of a JWKS refresh: the keys to use, and whether the issuer
/// failed to return new ones.
struct Refreshed {
    keys: Arc<LoadedKeys>,
    failed: bool,
}

impl Verifier {
    /// Creates a verifier; nothing is fetched until the first token.
    pub fn new(config: OidcConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let discovery_url = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            config.issuer.trim_end_matches('/')
        ))
        .map_err(|error| InvalidConfig::new(format!("invalid oidc_issuer: {error}")))?;
        let http = HttpClient::new().map_err(|error| {
            InvalidConfig::new(format!("failed to build the OIDC HTTP client: {error}"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                discovery_url,
                http,
                keys: RwLock::new(Arc::default()),
                refresh: tokio::sync::Mutex::new(RefreshState::default()),
                attempts: AtomicU64::new(0),
            }),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// Fetches the discovery document and the JWKS ahead of the first
    /// token, and returns the number of usable keys.
    pub async fn prefetch(&self) -> Result<usize, Error> {
        let seen = self.inner.attempts.load(Ordering::Acquire);
        let refreshed = self.refresh_keys(seen, false).await;
        if refreshed.failed {
            return Err(keys_unavailable());
        }
        Ok(refreshed.keys.set.len())
    }

    /// Verifies `token`'s signature and claims.
    ///
    /// Returns `unauthenticated` (`invalid credential`) for any invalid
    /// token, with the reason logged at debug level, and `unavailable` when
    /// the keys needed are not cached and the issuer cannot be reached.
    pub async fn verify<T: AsRef<str>>(&self, token: &Secret<T>) -> Result<VerifiedToken, Error> {
        let token = token.expose().as_ref();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(rejected("token is longer than 16 KiB"));
        }
        let (algorithm, kid) = parse_header(token).map_err(rejected)?;
        let kid = kid.as_deref();
        let seen = self.inner.attempts.load(Ordering::Acquire);
        let keys = self.current_keys();
        let lookup = keys.set.find(kid, algorithm);
        if keys.is_fresh() {
            match lookup {
                Lookup::Found(key) => return self.decode(token, key, algorithm),
                Lookup::WrongAlgorithm => {
                    return Err(rejected("the key named by kid does not verify alg"));
                }
                Lookup::Unknown => {}
            }
        }
        let unknown_key = matches!(lookup, Lookup::Unknown);
        let refreshed = self.refresh_keys(seen, unknown_key).await;
        match refreshed.keys.set.find(kid, algorithm) {
            Lookup::Found(key) => self.decode(token, key, algorithm),
            Lookup::WrongAlgorithm => Err(rejected("the key named by kid does not verify alg")),
            Lookup::Unknown if refreshed.failed => Err(keys_unavailable()),
            Lookup::Unknown => Err(rejected("no published key matches kid and alg")),
        }
    }

    /// Fetches the profile of `subject` from the userinfo endpoint, with
    /// `token` as the bearer credential.
    ///
    /// Returns `unauthenticated` when the endpoint rejects the token with
    /// 401, and `unavailable` for every other failure, including a
    /// response for another subject.
    pub async fn userinfo<T: AsRef<str>>(
        &self,
        token: &Secret<T>,
        subject: &str,
    ) -> Result<Profile, Error> {
        let discovery = {
            let mut state = self.inner.refresh.lock().await;
            self.discovery(&mut state).await
        };
        let Some(discovery) = discovery else {
            return Err(userinfo_unavailable());
        };
        let Some(endpoint) = discovery.userinfo_endpoint else {
            tracing::warn!(
                issuer = %self.inner.config.issuer,
                "The OIDC discovery document has no userinfo_endpoint; set the profile source to token"
            );
            return Err(userinfo_unavailable());
        };
        let claims: Map<String, Value> = match self
            .inner
            .http
            .get_json(&endpoint, Some(token.expose().as_ref()))
            .await
        {
            Ok(claims) => claims,
            Err(FetchError::Status(status)) if status == reqwest::StatusCode::UNAUTHORIZED => {
                return Err(rejected("the userinfo endpoint returned 401"));
            }
            Err(error) => {
                tracing::warn!(%endpoint, %error, "OIDC userinfo request failed");
                return Err(userinfo_unavailable());
            }
        };
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            tracing::warn!(
                %endpoint,
                subject,
                "OIDC userinfo response is for another subject; ignoring it"
            );
            return Err(userinfo_unavailable());
        }
        Ok(Profile::from_claims(&claims, &self.inner.config.claims))
    }

    fn current_keys(&self) -> Arc<LoadedKeys> {
        let keys = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        Arc::clone(&keys)
    }

    /// Fetches the JWKS unless a fetch attempt finished after the caller
    /// read `seen` from `attempts`, or, when keys are loaded, the last
    /// fetch was less than [`JWKS_REFETCH_INTERVAL`] ago. `unknown_key` is
    /// true when a token named a key that the cached set lacks.
    async fn refresh_keys(&self, seen: u64, unknown_key: bool) -> Refreshed {
        let mut state = self.inner.refresh.lock().await;
        let current = self.current_keys();

        if self.inner.attempts.load(Ordering::Acquire) != seen {
            return Refreshed {
                keys: current,
                failed: state.last_attempt_failed,
            };
        }

        let loaded = current.fetched_at.is_some();
        let recent = state
            .last_refetch
            .is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL);
        if loaded && recent {
            if unknown_key {
                tracing::debug!("JWKS refetch skipped: the last one was less than 30 s ago");
            }
            return Refreshed {
                keys: current,
                failed: state.last_attempt_failed,
            };
        }

        let started = Instant::now();
        if loaded {
            state.last_refetch = Some(started);
        }
        let result = self.fetch_keys(&mut state).await;
        state.last_attempt_failed = result.is_none();
        let refreshed = match result {
            Some(set) => {
                let keys = Arc::new(LoadedKeys {
                    set,
                    fetched_at: Some(started),
                });
                let mut slot = self
                    .inner
                    .keys
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner());
                *slot = Arc::clone(&keys);
                Refreshed {
                    keys,
                    failed: false,
                }
            }
            None => Refreshed {
                keys: current,
                failed: true,
            },
        };
        // Counted after the keys are stored, so a task that reads the new
        // count also reads the new keys.
        self.inner.attempts.fetch_add(1, Ordering::Release);
        refreshed
    }

    /// Fetches the JWKS named by the discovery document; failures are
    /// logged here and return `None`.
    async fn fetch_keys(&self, state: &mut RefreshState) -> Option<KeySet> {
        let discovery = self.discovery(state).await?;
        let issuer = &self.inner.config.issuer;
        let jwks_uri = &discovery.jwks_uri;
        match self
            .inner
            .http
            .get_json::<JwksDocument>(jwks_uri, None)
            .await
        {
            Ok(document) => {
                let (set, skipped) = KeySet::from_document(document);
                tracing::debug!(%issuer, %jwks_uri, keys = set.len(), skipped, "OIDC signing keys fetched");
                Some(set)
            }
            Err(error) => {
                tracing::warn!(%issuer, %jwks_uri, %error, "Failed to fetch the OIDC signing keys");
                None
            }
        }
    }

    /// Returns the discovery document, fetched again when it is older than
    /// [`DISCOVERY_MAX_AGE`]. When that fetch fails, the previous document
    /// is used; with none, the failure is logged and `None` returned.
    async fn discovery(&self, state: &mut RefreshState) -> Option<Discovery> {
        if let Some((discovery, fetched)) = &state.discovery
            && fetched.elapsed() < DISCOVERY_MAX_AGE
        {
            return Some(discovery.clone());
        }
        match self.fetch_discovery().await {
            Ok(discovery) => {
                state.discovery = Some((discovery.clone(), Instant::now()));
                Some(discovery)
            }
            Err(error) => {
                let url = &self.inner.discovery_url;
                let stale = state
                    .discovery
                    .as_ref()
                    .map(|(discovery, _)| discovery.clone());
                if stale.is_some() {
                    tracing::warn!(%url, %error, "Failed to refresh the OIDC discovery document; using the previous one");
                } else {
                    tracing::warn!(%url, %error, "Failed to fetch the OIDC discovery document");
                }
                stale
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovery, String> {
        let document: DiscoveryDocument = self
            .inner
            .http
            .get_json(&self.inner.discovery_url, None)
            .await
            .map_err(|error| error.to_string())?;
        if document.issuer != self.inner.config.issuer {
            return Err(format!(
                "the document names issuer {:?}, expected {:?}",
                document.issuer, self.inner.config.issuer
            ));
        }
        let endpoint = |name: &str, value: &str| {
            let url = Url::parse(value).map_err(|error| format!("invalid {name}: {error}"))?;
            check_endpoint_url(&url)
                .map_err(|problem| format!("invalid {name} {value:?}: {problem}"))?;
            Ok::<Url, String>(url)
        };
        let jwks_uri = endpoint("jwks_uri", &document.jwks_uri)?;
        let userinfo_endpoint = document
            .userinfo_endpoint
            .as_deref()
            .map(|value| endpoint("userinfo_endpoint", value))
            .transpose()?;
        Ok(Discovery {
            jwks_uri,
            userinfo_endpoint,
        })
    }

    /// Checks the signature with `key`, then the registered claims.
    fn decode(
        &self,
        token: &str,
        key: &VerifyingKey,
        algorithm: Algorithm,
    ) -> Result<VerifiedToken, Error> {
        // The library checks the signature only; `claims::check` applies
        // the claim rules, which differ from the library's defaults.
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|error| {
                tracing::debug!(%error, "OIDC token signature check failed");
                rejected("invalid signature or payload")
            })?;
        let config = &self.inner.config;
        let subject = claims::check(
            &data.claims,
            &config.issuer,
            config.audience.as_deref(),
            unix_now(),
        )
        .map_err(rejected)?;
        Ok(VerifiedToken {
            subject,
            claims: data.claims,
        })
    }
}

/// Reads the header's algorithm and key id. Rejects algorithms outside
/// [`ACCEPTED_ALGORITHMS`] and any `crit` header, because no JWS
/// extension is supported (RFC 7515, section 4.1.11).
fn parse_header(token: &str) -> Result<(Algorithm, Option<String>), &'static str> {
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| "the header is not base64url")?;
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|_| "the header is not a JOSE header")?;
    if header.crit.is_some() {
        return Err("the header has crit");
    }
    let algorithm: Algorithm = header
        .alg
        .parse()
        .map_err(|_| "alg is not a supported signature algorithm")?;
    if !ACCEPTED_ALGORITHMS.contains(&algorithm) {
        return Err("alg is not accepted");
    }
    Ok((algorithm, header.kid))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// Logs why a token was rejected and returns the error for the client.
fn rejected(reason: &str) -> Error {
    tracing::debug!(reason, "OIDC token rejected");
    Error::unauthenticated("invalid credential")
}

fn keys_unavailable() -> Error {
    Error::unavailable(
        "the OIDC issuer is unavailable: its signing keys could not be fetched; retry later",
    )
}

fn userinfo_unavailable() -> Error {
    Error::unavailable("the OIDC issuer is unavailable: the userinfo request failed; retry later")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(header: &str) -> String {
        format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn header_algorithms() {
        let (algorithm, kid) = parse_header(&encode(r#"{"alg":"ES256","kid":"k1"}"#)).unwrap();
        assert_eq!(algorithm, Algorithm::ES256);
        assert_eq!(kid.as_deref(), Some("k1"));
        for (header, reason) in [
            (
                r#"{"alg":"none"}"#,
                "alg is not a supported signature algorithm",
            ),
            (r#"{"alg":"HS256"}"#, "alg is not accepted"),
            (r#"{"alg":"PS512"}"#, "alg is not accepted"),
            (r#"{"alg":"RS256","crit":["b64"]}"#, "the header has crit"),
            (r#"{"kid":"k1"}"#, "the header is not a JOSE header"),
        ] {
            assert_eq!(parse_header(&encode(header)), Err(reason), "{header}");
        }
        assert_eq!(
            parse_header("***.e30.sig"),
            Err("the header is not base64url")
        );
    }
}
