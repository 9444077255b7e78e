//! GET requests to the issuer's discovery, JWKS and userinfo endpoints.

use std::fmt;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit on a whole request, from connecting to the last body byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read from the issuer.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A failed request to the issuer.
#[derive(Debug)]
pub(crate) enum FetchError {
    Transport(reqwest::Error),
    Status(StatusCode),
    TooLarge,
    Json(serde_json::Error),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(error) => write!(f, "request failed: {error}"),
            Self::Status(status) => write!(f, "unexpected HTTP status {status}"),
            Self::TooLarge => write!(f, "response body exceeds {MAX_BODY_BYTES} bytes"),
            Self::Json(error) => write!(f, "invalid JSON: {error}"),
        }
    }
}

#[derive(Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could carry the access token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agyn/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Fetches `url` and parses its JSON body. `bearer` is sent as the
    /// `Authorization` header, marked sensitive so that it is not logged.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
        bearer: Option<&str>,
    ) -> Result<T, FetchError> {
        let mut request = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(FetchError::Transport)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(FetchError::Transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(FetchError::Json)
    }
}
