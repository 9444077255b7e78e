//! Reads of HashiCorp Vault's KV version 2 engine.
//!
//! A remote name `<mount>/<path...>/<key>` is read as
//! `GET {address}/v1/{mount}/data/{path...}` with the token in
//! `X-Vault-Token`, and the value is `data.data[<key>]` of the JSON
//! response. Nothing is cached, so every resolution sends one request.

use std::time::Duration;

use agyn_core::error::Code;
use agyn_core::{Error, Result, Secret};
use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

/// Limit on one Vault request, from connecting to the last body byte.
pub const VAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum size of a Vault response, in bytes. A response contains every
/// key of one version of the path, so the limit is well above one value.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// The HTTP client for secret providers, shared by every request.
#[derive(Clone)]
pub(crate) struct VaultClient {
    http: reqwest::Client,
}

/// `{"data": {"data": {...}}}`, the part of a KV version 2 read that
/// matters here.
#[derive(Deserialize)]
struct ReadResponse {
    data: Option<VersionData>,
}

#[derive(Deserialize)]
struct VersionData {
    /// `None` when the response has `"data": null`, which is read as a
    /// missing secret.
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

impl VaultClient {
    pub(crate) fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(VAULT_TIMEOUT)
            // A redirect could carry the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agyn/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client for secret providers builds with rustls and native roots");
        Self { http }
    }

    /// Reads `remote_name` from the Vault server at `address` as provider
    /// `provider_id`. Fails with `not_found` ("remote secret not found")
    /// for a 404 or a missing key, `failed_precondition` for a value that
    /// is not a string, and `unavailable` for any other failure, including
    /// a stored address or token that cannot form a request.
    pub(crate) async fn read(
        &self,
        provider_id: &str,
        address: &str,
        token: &Secret<String>,
        remote_name: &str,
    ) -> Result<Secret<String>> {
        let segments: Vec<&str> = remote_name.split('/').collect();
        let (mount, path, key) = match segments.as_slice() {
            [mount, path @ .., key] if !path.is_empty() => (*mount, path, *key),
            _ => {
                return Err(Error::unavailable(format!(
                    "remote name {remote_name:?} is not <mount>/<path>/<key>"
                )));
            }
        };
        let url = data_url(address, mount, path).map_err(|problem| {
            Error::unavailable(format!(
                "secret provider {provider_id} has an invalid address: {problem}"
            ))
        })?;
        let mut token_header = HeaderValue::from_str(token.expose()).map_err(|_| {
            Error::unavailable(format!(
                "secret provider {provider_id} has a token that is not a valid header value; replace it"
            ))
        })?;
        token_header.set_sensitive(true);

        let mut response = self
            .http
            .get(url)
            .header("X-Vault-Token", token_header)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| transport_failed(provider_id, &error))?;
        match response.status() {
            StatusCode::NOT_FOUND => return Err(remote_not_found()),
            status if !status.is_success() => {
                return Err(Error::unavailable(format!(
                    "secret provider {provider_id} returned HTTP {}",
                    status.as_u16()
                )));
            }
            _ => {}
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| transport_failed(provider_id, &error))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Error::unavailable(format!(
                    "secret provider {provider_id} returned more than {} MiB",
                    MAX_RESPONSE_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let body = Secret::new(body);
        let parsed: ReadResponse = serde_json::from_slice(body.expose()).map_err(|_| {
            Error::unavailable(format!(
                "secret provider {provider_id} returned a body that is not a KV version 2 read response"
            ))
        })?;
        let Some(version) = parsed.data else {
            return Err(Error::unavailable(format!(
                "secret provider {provider_id} returned a body that is not a KV version 2 read response"
            )));
        };
        let Some(mut entries) = version.data else {
            return Err(remote_not_found());
        };
        match entries.remove(key) {
            None => Err(remote_not_found()),
            Some(serde_json::Value::String(value)) => Ok(Secret::new(value)),
            Some(_) => Err(Error::failed_precondition(format!(
                "remote secret {remote_name} is not a string; store the key {key:?} as a string"
            ))),
        }
    }
}

/// Returns `{address}/v1/{mount}/data/{path...}`, each segment
/// percent-encoded.
fn data_url(address: &str, mount: &str, path: &[&str]) -> Result<Url, String> {
    let mut url = Url::parse(address).map_err(|error| error.to_string())?;
    url.path_segments_mut()
        .map_err(|()| "it cannot have a path".to_string())?
        .pop_if_empty()
        .push("v1")
        .push(mount)
        .push("data")
        .extend(path);
    Ok(url)
}

fn remote_not_found() -> Error {
    Error::new(Code::NotFound, "remote secret not found")
}

/// Builds the `unavailable` error of a request that failed or timed out,
/// with the innermost cause, such as `Connection refused`.
fn transport_failed(provider_id: &str, error: &reqwest::Error) -> Error {
    if error.is_timeout() {
        return Error::unavailable(format!(
            "secret provider {provider_id} did not respond within {} s",
            VAULT_TIMEOUT.as_secs()
        ));
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    Error::unavailable(format!(
        "secret provider {provider_id} is unreachable: {cause}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_url_encodes_segments() {
        let url = data_url(
            "https://vault.example.com:8200",
            "secret",
            &["team a", "app"],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://vault.example.com:8200/v1/secret/data/team%20a/app"
        );
        let url = data_url("http://127.0.0.1:8200/base/", "kv", &["x?y"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8200/base/v1/kv/data/x%3Fy");
    }
}
