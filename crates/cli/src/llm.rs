//! `agyn providers` and `agyn models`: LLM providers and the models they
//! serve.

use std::path::{Path, PathBuf};

use agyn_client::llm::{
    AuthMethod, CreateModelRequest, CreateProviderRequest, ListModelsResponse,
    ListProvidersResponse, Model, Protocol, Provider, Script,
};
use clap::{Args, Subcommand, ValueEnum};

use crate::error::{CliError, Result};
use crate::output::{self, Table};
use crate::resolve;
use crate::session::{GlobalArgs, OrgArgs, Session};

#[derive(Args, Debug)]
pub struct ProvidersArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(flatten)]
    pub org: OrgArgs,

    #[command(subcommand)]
    pub command: ProvidersCommand,
}

#[derive(Subcommand, Debug)]
pub enum ProvidersCommand {
    /// Create an LLM provider: a scripted one, or an upstream endpoint
    /// with its API key
    Create(CreateProviderArgs),
    /// List the organization's providers
    List,
}

/// Kind of provider and the wire protocol it speaks.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderType {
    /// Replies from a script, without any network call
    Scripted,
    /// OpenAI Responses API, with a bearer token
    Openai,
    /// OpenAI Chat Completions API, with a bearer token
    OpenaiChat,
    /// Anthropic Messages API, with an `x-api-key` token
    Anthropic,
}

#[derive(Args, Debug)]
pub struct CreateProviderArgs {
    /// Name, 1 to 64 characters, unique in the organization
    #[arg(long)]
    pub name: String,

    #[arg(long = "type", value_name = "TYPE")]
    pub kind: ProviderType,

    /// JSON file with the script of a scripted provider, in proto JSON:
    /// `{"rules": [{"whenInputContains": "hello", "steps": [{"text": "Hi!"}]}]}`
    #[arg(long, value_name = "PATH")]
    pub script_file: Option<PathBuf>,

    /// Base URL of the upstream API (the platform appends `/v1/...`), or
    /// a full operation URL
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Environment variable that contains the upstream API key. The key
    /// is stored encrypted and never returned
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
}

#[derive(Args, Debug)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(flatten)]
    pub org: OrgArgs,

    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Create a model served by a provider
    Create {
        /// Provider id or name
        #[arg(long)]
        provider: String,
        /// Display name, 1 to 128 characters
        #[arg(long)]
        name: String,
        /// The provider's own model id, such as `gpt-5`. Defaults to --name
        #[arg(long)]
        remote_name: Option<String>,
    },
    /// List the organization's models
    List,
}

pub async fn providers(args: ProvidersArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    let organization_id = resolve::organization(&session.gateway, &args.org).await?;
    match args.command {
        ProvidersCommand::Create(create) => {
            let request = provider_request(organization_id, create)?;
            let created = session
                .gateway
                .llm()
                .create_provider(request)
                .await?
                .into_owned();
            if session.json {
                return output::print_json(&created);
            }
            print_providers(created.provider.as_option().into_iter())
        }
        ProvidersCommand::List => {
            let providers = resolve::list_providers(&session.gateway, &organization_id).await?;
            if session.json {
                return output::print_json(&ListProvidersResponse {
                    providers,
                    ..Default::default()
                });
            }
            print_providers(providers.iter())
        }
    }
}

/// Builds the CreateProvider request, checking that the options fit the
/// provider type.
fn provider_request(
    organization_id: String,
    args: CreateProviderArgs,
) -> Result<CreateProviderRequest> {
    let mut request = CreateProviderRequest {
        organization_id,
        name: args.name,
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    if args.kind == ProviderType::Scripted {
        if args.base_url.is_some() || args.api_key_env.is_some() {
            return Err(CliError::usage(
                "--base-url and --api-key-env do not apply to --type scripted",
            ));
        }
        let Some(path) = args.script_file else {
            return Err(CliError::usage("--type scripted requires --script-file"));
        };
        request.script = read_script(&path)?.into();
        return Ok(request);
    }

    if args.script_file.is_some() {
        return Err(CliError::usage(
            "--script-file applies only to --type scripted",
        ));
    }
    let (Some(base_url), Some(variable)) = (args.base_url, args.api_key_env) else {
        return Err(CliError::usage(
            "--type openai, openai-chat and anthropic require --base-url and --api-key-env",
        ));
    };
    let token = std::env::var(&variable)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| {
            CliError::usage(format!(
                "--api-key-env: the environment variable {variable} is unset or empty"
            ))
        })?;
    let (protocol, auth_method) = match args.kind {
        ProviderType::Openai => (Protocol::PROTOCOL_RESPONSES, AuthMethod::AUTH_METHOD_BEARER),
        ProviderType::OpenaiChat => (
            Protocol::PROTOCOL_CHAT_COMPLETIONS,
            AuthMethod::AUTH_METHOD_BEARER,
        ),
        ProviderType::Anthropic => (
            Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
            AuthMethod::AUTH_METHOD_X_API_KEY,
        ),
        ProviderType::Scripted => unreachable!("handled above"),
    };
    request.endpoint = base_url;
    request.protocol = protocol.into();
    request.auth_method = auth_method.into();
    request.token = token.trim().to_string();
    Ok(request)
}

/// Reads a script in proto JSON.
fn read_script(path: &Path) -> Result<Script> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        CliError::failed(format!(
            "failed to read the script file {}: {error}",
            path.display()
        ))
    })?;
    let script: Script = serde_json::from_str(&text).map_err(|error| {
        CliError::usage(format!(
            "--script-file {}: invalid script: {error}",
            path.display()
        ))
    })?;
    // NOTE: the generated JSON decoder drops unknown keys, so a misspelled
    // key goes unnoticed unless it leaves the script without rules.
    if script.rules.is_empty() {
        return Err(CliError::usage(format!(
            "--script-file {}: the script has no rules, so write {{\"rules\": [...]}}",
            path.display()
        )));
    }
    Ok(script)
}

fn print_providers<'a>(providers: impl Iterator<Item = &'a Provider>) -> Result<()> {
    let mut table = Table::new(&["ID", "NAME", "TYPE", "ENDPOINT"]);
    for provider in providers {
        let kind = if provider.script.is_set() {
            "scripted".to_string()
        } else {
            output::label(&provider.protocol, "PROTOCOL_")
        };
        table.row(vec![
            resolve::id_of(&provider.meta),
            provider.name.clone(),
            kind,
            output::or_dash(&provider.endpoint),
        ]);
    }
    table.print_or("No providers.")
}

pub async fn models(args: ModelsArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    let organization_id = resolve::organization(&session.gateway, &args.org).await?;
    match args.command {
        ModelsCommand::Create {
            provider,
            name,
            remote_name,
        } => {
            let provider_id =
                resolve::provider(&session.gateway, &organization_id, &provider).await?;
            let created = session
                .gateway
                .llm()
                .create_model(CreateModelRequest {
                    organization_id,
                    remote_name: remote_name.unwrap_or_else(|| name.clone()),
                    name,
                    provider_id,
                    request_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                })
                .await?
                .into_owned();
            if session.json {
                return output::print_json(&created);
            }
            print_models(created.model.as_option().into_iter())
        }
        ModelsCommand::List => {
            let models = resolve::list_models(&session.gateway, &organization_id).await?;
            if session.json {
                return output::print_json(&ListModelsResponse {
                    models,
                    ..Default::default()
                });
            }
            print_models(models.iter())
        }
    }
}

fn print_models<'a>(models: impl Iterator<Item = &'a Model>) -> Result<()> {
    let mut table = Table::new(&["ID", "NAME", "REMOTE NAME", "PROTOCOL", "PROVIDER ID"]);
    for model in models {
        table.row(vec![
            resolve::id_of(&model.meta),
            model.name.clone(),
            model.remote_name.clone(),
            output::label(&model.protocol, "PROTOCOL_"),
            model.provider_id.clone(),
        ]);
    }
    table.print_or("No models.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: ProviderType) -> CreateProviderArgs {
        CreateProviderArgs {
            name: "demo".to_string(),
            kind,
            script_file: None,
            base_url: None,
            api_key_env: None,
        }
    }

    #[test]
    fn scripted_requires_script_file() {
        let error = provider_request("org".into(), args(ProviderType::Scripted)).unwrap_err();
        assert_eq!(error.to_string(), "--type scripted requires --script-file");
        assert_eq!(error.exit_status(), 2);
    }

    #[test]
    fn openai_requires_base_url_and_key() {
        let mut openai = args(ProviderType::Openai);
        openai.base_url = Some("https://api.openai.com".to_string());
        let error = provider_request("org".into(), openai).unwrap_err();
        assert!(error.to_string().contains("--api-key-env"), "{error}");
    }

    #[test]
    fn openai_rejects_unset_key_variable() {
        let mut openai = args(ProviderType::Openai);
        openai.base_url = Some("https://api.openai.com".to_string());
        openai.api_key_env = Some("AGYN_CLI_TEST_VARIABLE_THAT_IS_NEVER_SET".to_string());
        let error = provider_request("org".into(), openai).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--api-key-env: the environment variable \
             AGYN_CLI_TEST_VARIABLE_THAT_IS_NEVER_SET is unset or empty"
        );
    }

    #[test]
    fn script_file_is_proto_json() {
        let path =
            std::env::temp_dir().join(format!("agyn-cli-script-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"rules": [{"whenInputContains": "hello", "steps": [{"text": "Hi {{input}}"}]}]}"#,
        )
        .unwrap();
        let mut scripted = args(ProviderType::Scripted);
        scripted.script_file = Some(path.clone());
        let request = provider_request("org".into(), scripted).unwrap();
        std::fs::remove_file(&path).unwrap();
        let script = request.script.as_option().expect("the script is set");
        assert_eq!(script.rules.len(), 1);
        assert_eq!(script.rules[0].when_input_contains, "hello");
        assert!(request.endpoint.is_empty());
        assert!(request.token.is_empty());
    }

    #[test]
    fn script_file_without_rules_is_rejected() {
        let path =
            std::env::temp_dir().join(format!("agyn-cli-bad-script-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"rulez": []}"#).unwrap();
        let error = read_script(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.contains("the script has no rules"), "{error}");
    }

    #[test]
    fn script_file_with_bad_json_is_rejected() {
        let path = std::env::temp_dir().join(format!(
            "agyn-cli-broken-script-{}.json",
            std::process::id()
        ));
        std::fs::write(&path, r#"{"rules": [{"steps": "#).unwrap();
        let error = read_script(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(error.to_string().contains("invalid script"), "{error}");
        assert_eq!(error.exit_status(), 2);
    }
}
