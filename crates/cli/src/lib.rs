//! The agyn command-line client.
//!
//! [`Command`] contains the client's subcommands, which the `agyn` binary
//! mounts next to its own (`serve`, `runner`), and [`run`] executes one.
//! Every call goes to the public gateway through [`agyn_client`], with the
//! login that `agyn login` stores (see [`credentials`]).
//!
//! Output is a short table, or one line of proto JSON per result with
//! `--json`. Errors print as `agyn: <code>: <message>` with the gateway's
//! Connect code and exit with status 1; usage errors exit with status 2.

mod agents;
mod conversations;
mod credentials;
mod error;
mod llm;
mod login;
mod messages;
mod orgs;
mod output;
mod reply;
mod resolve;
mod session;
mod workloads;

use std::process::ExitCode;

use clap::Subcommand;

pub use error::{CliError, Result};

/// The client's subcommands. The nouns are plural because `agyn agent` is
/// the agent program that runs inside workloads.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check an API token against a gateway and store it for the other
    /// commands
    Login(login::LoginArgs),
    /// Remove the stored login
    Logout(login::LogoutArgs),
    /// Create and list organizations
    Orgs(orgs::OrgsArgs),
    /// Create and list LLM providers
    Providers(llm::ProvidersArgs),
    /// Create and list models
    Models(llm::ModelsArgs),
    /// Create and list agents and their MCP servers
    Agents(agents::AgentsArgs),
    /// Start and list conversations with agents
    Conversations(conversations::ConversationsArgs),
    /// Send a message to a conversation and optionally wait for the reply
    Send(messages::SendArgs),
    /// Print a conversation's messages, oldest first
    Messages(messages::MessagesArgs),
    /// List agent workloads
    Workloads(workloads::WorkloadsArgs),
    /// Print a workload container's log
    Logs(workloads::LogsArgs),
}

/// Runs `command` on a new Tokio runtime, prints its error, if any, to
/// standard error and returns the exit status.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agyn: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::OutputClosed) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agyn: {error}");
            ExitCode::from(error.exit_status())
        }
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Login(args) => login::login(args).await,
        Command::Logout(args) => login::logout(args),
        Command::Orgs(args) => orgs::run(args).await,
        Command::Providers(args) => llm::providers(args).await,
        Command::Models(args) => llm::models(args).await,
        Command::Agents(args) => agents::run(args).await,
        Command::Conversations(args) => conversations::run(args).await,
        Command::Send(args) => messages::send(args).await,
        Command::Messages(args) => messages::messages(args).await,
        Command::Workloads(args) => workloads::run(args).await,
        Command::Logs(args) => workloads::logs(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> std::result::Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("agyn").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_flag_is_accepted_after_nested_subcommand() {
        let Command::Agents(args) = parse(&["agents", "mcp", "list", "helper", "--json"]).unwrap()
        else {
            panic!("expected agents");
        };
        assert!(args.global.json);
    }

    #[test]
    fn org_flag_is_accepted_before_subcommand() {
        let Command::Models(args) = parse(&["models", "--org", "acme", "list"]).unwrap() else {
            panic!("expected models");
        };
        assert_eq!(args.org.org.as_deref(), Some("acme"));
    }

    #[test]
    fn token_and_token_file_conflict() {
        let error = parse(&["login", "--token", "a", "--token-file", "b"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn send_timeout_defaults_to_two_minutes() {
        let conversation = "01a24291-82b2-77c8-8878-169c1b5d145d";
        let Command::Send(args) = parse(&["send", conversation, "hello"]).unwrap() else {
            panic!("expected send");
        };
        assert_eq!(args.timeout, std::time::Duration::from_secs(120));
        assert!(!args.wait);
    }

    #[test]
    fn conversation_ids_must_be_uuids() {
        for args in [
            &["send", "nope", "hello"][..],
            &["messages", "nope"],
            &["workloads", "list", "--conversation", "nope"],
        ] {
            let error = parse(args).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
            let message = error.to_string();
            assert!(message.contains("'nope'"), "{message}");
            assert!(message.contains("a conversation id is a UUID"), "{message}");
        }
    }

    #[test]
    fn logs_tail_must_be_positive() {
        let error = parse(&["logs", "w", "--tail", "0"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
