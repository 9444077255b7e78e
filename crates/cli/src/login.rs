//! `agyn login` and `agyn logout`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use agyn_client::users::GetMeRequest;
use agyn_core::Secret;
use clap::Args;

use crate::credentials::{self, Credentials};
use crate::error::{CliError, Result};
use crate::output::{self, Table};
use crate::resolve;
use crate::session::{self, GlobalArgs};

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// API token, or `-` to read it from standard input. The value is visible
    /// to other local users in the process list, so prefer --token-file
    /// or `-`. Without either option the token comes from AGYN_TOKEN
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// File that contains the API token, such as `<data dir>/admin-token`
    /// of `agyn serve`
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// PEM file of the CA that signs the gateway's TLS certificate, such
    /// as `<data dir>/ca.crt` of `agyn serve`
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Checks the token with `UsersGateway/GetMe` and stores the login.
pub async fn login(args: LoginArgs) -> Result<()> {
    let Some(url) = args.global.gateway.clone() else {
        return Err(CliError::usage(
            "missing gateway URL: pass --gateway <url> or set AGYN_GATEWAY_URL",
        ));
    };
    let token = read_token(&args)?;
    let ca_file = args.ca_file.as_deref().map(absolute).transpose()?;

    let gateway = session::connect(
        &url,
        Secret::new(token.expose().clone()),
        ca_file.as_deref(),
    )?;
    let me = gateway
        .users()
        .get_me(GetMeRequest::default())
        .await
        .map_err(|error| with_connection_hint(error.into()))?
        .into_owned();

    let path = credentials::save(
        &credentials::config_dir()?,
        &Credentials {
            gateway_url: url.clone(),
            token,
            ca_file,
        },
    )?;

    if args.global.json {
        return output::print_json(&me);
    }
    let user = me.user.as_option();
    let mut table = Table::new(&["GATEWAY", "USER ID", "USERNAME", "CREDENTIALS"]);
    table.row(vec![
        url,
        user.map(|user| resolve::id_of(&user.meta))
            .unwrap_or_default(),
        output::or_dash(user.map(|user| user.username.as_str()).unwrap_or_default()),
        path.display().to_string(),
    ]);
    output::print(&table.render())
}

/// Deletes the stored login.
pub fn logout(args: LogoutArgs) -> Result<()> {
    let dir = credentials::config_dir()?;
    let removed = credentials::remove(&dir)?;
    let path = credentials::path_in(&dir);
    if args.global.json {
        return output::print_json(&serde_json::json!({
            "removed": removed,
            "path": path,
        }));
    }
    if removed {
        output::print(&format!("Removed {}\n", path.display()))
    } else {
        output::print(&format!(
            "Not logged in: {} does not exist\n",
            path.display()
        ))
    }
}

/// Reads the token from `--token`, standard input (`--token -`),
/// `--token-file` or `AGYN_TOKEN`, without surrounding whitespace.
fn read_token(args: &LoginArgs) -> Result<Secret<String>> {
    let raw = match (&args.token, &args.token_file) {
        (Some(token), _) if token == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| {
                    CliError::failed(format!(
                        "failed to read the token from standard input: {error}"
                    ))
                })?;
            text
        }
        (Some(token), _) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
            CliError::failed(format!(
                "failed to read the token file {}: {error}",
                path.display()
            ))
        })?,
        (None, None) => std::env::var("AGYN_TOKEN").map_err(|_| {
            CliError::usage("missing token: pass --token, --token-file or set AGYN_TOKEN")
        })?,
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(CliError::usage("the token is empty"));
    }
    Ok(Secret::new(token.to_string()))
}

/// Hint that login adds when it cannot reach the gateway.
const CONNECTION_HINT: &str = "check the gateway URL, and pass --ca-file when the system \
     does not trust the gateway's certificate";

/// Appends what to check to an `unavailable` error, the code of both an
/// unreachable gateway and an untrusted certificate.
fn with_connection_hint(error: CliError) -> CliError {
    match error {
        CliError::Gateway { code, message } if code == "unavailable" => CliError::Gateway {
            code,
            message: format!("{message} ({CONNECTION_HINT})"),
        },
        CliError::Unreachable { cause } => CliError::Unreachable {
            cause: format!("{cause} ({CONNECTION_HINT})"),
        },
        other => other,
    }
}

/// Makes `path` absolute, so the stored CA path works from any directory.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|error| {
        CliError::failed(format!(
            "invalid CA certificate path {}: {error}",
            path.display()
        ))
    })
}
