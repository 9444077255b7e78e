//! gRPC clients over h2c, one HTTP/2 connection per [`HttpClient`].

use std::path::Path;

use agyn_api_notifications::agynio::api::notifications::v1::NotificationsGatewayClient;
use agyn_api_organizations::agynio::api::organizations::v1::OrganizationsGatewayClient;
use agyn_api_threads::agynio::api::threads::v1::ThreadsGatewayClient;
use connectrpc::Protocol;
use connectrpc::client::{ClientConfig, HttpClient};

use crate::BenchError;

/// One benchmark identity: its id and the plaintext of its API token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub token: String,
}

/// Reads the `<identity id> <token>` lines written by `agyn-bench
/// identities`.
pub fn read_identities(path: &Path) -> Result<Vec<Identity>, BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read identities file {}: {error}", path.display()))?;
    let mut identities = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((id, token)) = line.split_once(' ') else {
            return Err(format!(
                "{}:{}: invalid line: expected `<identity id> <token>`",
                path.display(),
                index + 1
            )
            .into());
        };
        identities.push(Identity {
            id: id.to_string(),
            token: token.trim().to_string(),
        });
    }
    if identities.is_empty() {
        return Err(format!(
            "identities file {} is empty: run `agyn-bench identities` first",
            path.display()
        )
        .into());
    }
    Ok(identities)
}

/// Reads an API token file such as `<data-dir>/admin-token`.
pub fn read_token(path: &Path) -> Result<String, BenchError> {
    let token = std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read token file {}: {error}", path.display()))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()).into());
    }
    Ok(token)
}

/// Builds a gRPC client configuration for `url` that sends `token` as its
/// bearer credential.
fn config(url: &str, token: &str) -> Result<ClientConfig, BenchError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|error| format!("invalid --url {url:?}: {error}"))?;
    Ok(ClientConfig::new(uri)
        .with_protocol(Protocol::Grpc)
        .with_default_header("authorization", format!("Bearer {token}")))
}

/// Builds a ThreadsGateway client with its own HTTP/2 connection, opened
/// on the first call.
pub fn threads(url: &str, token: &str) -> Result<ThreadsGatewayClient<HttpClient>, BenchError> {
    Ok(ThreadsGatewayClient::new(
        HttpClient::plaintext_http2_only(),
        config(url, token)?,
    ))
}

/// Builds an OrganizationsGateway client with its own HTTP/2 connection.
pub fn organizations(
    url: &str,
    token: &str,
) -> Result<OrganizationsGatewayClient<HttpClient>, BenchError> {
    Ok(OrganizationsGatewayClient::new(
        HttpClient::plaintext_http2_only(),
        config(url, token)?,
    ))
}

/// Builds a NotificationsGateway client with its own HTTP/2 connection.
pub fn notifications(
    url: &str,
    token: &str,
) -> Result<NotificationsGatewayClient<HttpClient>, BenchError> {
    Ok(NotificationsGatewayClient::new(
        HttpClient::plaintext_http2_only(),
        config(url, token)?,
    ))
}

/// Builds a NotificationsGateway client that shares `transport`'s
/// connection and sends `token`, so that several identities can use one
/// connection.
pub fn notifications_on(
    transport: &HttpClient,
    url: &str,
    token: &str,
) -> Result<NotificationsGatewayClient<HttpClient>, BenchError> {
    Ok(NotificationsGatewayClient::new(
        transport.clone(),
        config(url, token)?,
    ))
}
