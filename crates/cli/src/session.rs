//! Options every command takes, and the gateway connection built from
//! them and the stored credentials.

use std::path::{Path, PathBuf};

use agyn_client::{Credential, Gateway};
use agyn_core::Secret;
use clap::Args;

use crate::credentials;
use crate::error::{CliError, Result};

/// Options accepted by every command, before or after the subcommand.
#[derive(Args, Clone, Debug, Default)]
pub struct GlobalArgs {
    /// Print each result as one line of JSON: the gateway's response in
    /// proto JSON
    #[arg(long, global = true)]
    pub json: bool,

    /// Gateway URL (http:// or https://), overriding the stored one
    #[arg(long, global = true, env = "AGYN_GATEWAY_URL", value_name = "URL")]
    pub gateway: Option<String>,
}

/// The organization option of commands that work inside one.
#[derive(Args, Clone, Debug, Default)]
pub struct OrgArgs {
    /// Organization id or slug. Defaults to the only organization you are
    /// a member of
    #[arg(long, global = true, env = "AGYN_ORG", value_name = "ID_OR_SLUG")]
    pub org: Option<String>,
}

/// A gateway client with the caller's credential.
pub struct Session {
    pub gateway: Gateway,
    pub json: bool,
}

impl Session {
    /// Connects with the stored credentials. `--gateway` (or
    /// `AGYN_GATEWAY_URL`) replaces the stored URL, `AGYN_TOKEN` the
    /// stored token and `AGYN_CA_FILE` the stored CA certificate path.
    pub fn open(global: &GlobalArgs) -> Result<Self> {
        let stored = credentials::load(&credentials::config_dir()?)?;
        let env_token = std::env::var("AGYN_TOKEN")
            .ok()
            .filter(|token| !token.trim().is_empty())
            .map(|token| Secret::new(token.trim().to_string()));
        let env_ca_file = std::env::var_os("AGYN_CA_FILE")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);

        let (stored_url, stored_token, stored_ca_file) = match stored {
            Some(stored) => (Some(stored.gateway_url), Some(stored.token), stored.ca_file),
            None => (None, None, None),
        };
        let not_logged_in = || {
            CliError::failed(
                "not logged in: run `agyn login --gateway <url> --token-file <file>`, \
                 or set AGYN_GATEWAY_URL and AGYN_TOKEN",
            )
        };
        let url = global
            .gateway
            .clone()
            .or(stored_url)
            .ok_or_else(not_logged_in)?;
        let token = env_token.or(stored_token).ok_or_else(not_logged_in)?;
        let ca_file = env_ca_file.or(stored_ca_file);
        let gateway = connect(&url, token, ca_file.as_deref())?;
        Ok(Self {
            gateway,
            json: global.json,
        })
    }
}

/// Builds a gateway client for `url` with a bearer token, trusting the CA
/// in `ca_file` when given.
pub fn connect(url: &str, token: Secret<String>, ca_file: Option<&Path>) -> Result<Gateway> {
    let ca_pem = match ca_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
            CliError::failed(format!(
                "failed to read the CA certificate {}: {error}",
                path.display()
            ))
        })?),
        None => None,
    };
    let gateway = Gateway::connect(url, Credential::Token(token), ca_pem.as_deref())
        .map_err(|error| CliError::usage(format!("invalid gateway: {}", error.message())))?;
    crate::error::set_gateway_url(gateway.url());
    Ok(gateway)
}
