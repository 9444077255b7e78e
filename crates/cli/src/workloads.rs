//! `agyn workloads` and `agyn logs`: the agent workloads that runners run.

use std::io::Write as _;

use agyn_client::runners::{
    ListWorkloadsByThreadRequest, ListWorkloadsRequest, ListWorkloadsResponse,
    StreamWorkloadLogsRequest, Workload,
};
use agyn_client::streaming;
use clap::{Args, Subcommand};

use crate::error::Result;
use crate::output::{self, Table};
use crate::resolve;
use crate::session::{GlobalArgs, OrgArgs, Session};

#[derive(Args, Debug)]
pub struct WorkloadsArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(flatten)]
    pub org: OrgArgs,

    #[command(subcommand)]
    pub command: WorkloadsCommand,
}

#[derive(Subcommand, Debug)]
pub enum WorkloadsCommand {
    /// List workloads, newest first: the organization's, or one
    /// conversation's
    List {
        /// Conversation id; lists only its workloads
        #[arg(long, value_name = "ID", value_parser = crate::resolve::parse_conversation_id)]
        conversation: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// Workload id
    pub workload: String,

    /// Container whose output to print: `agent`, `agyn-init`,
    /// `mcp-<name>` or `hook-<id prefix>`
    #[arg(long, default_value = "agent")]
    pub container: String,

    /// Keep printing new output until the container exits
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Number of most recent lines to print first; the platform default
    /// is 1000
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub tail: Option<i32>,
}

pub async fn run(args: WorkloadsArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    let WorkloadsCommand::List { conversation } = args.command;
    let workloads = match conversation {
        Some(thread_id) => by_thread(&session, &thread_id).await?,
        None => {
            let organization_id = resolve::organization(&session.gateway, &args.org).await?;
            by_organization(&session, &organization_id).await?
        }
    };
    if session.json {
        return output::print_json(&ListWorkloadsResponse {
            workloads,
            ..Default::default()
        });
    }
    let mut table = Table::new(&[
        "ID",
        "AGENT",
        "STATUS",
        "AGENT STATE",
        "CONVERSATION ID",
        "RUNNER",
        "CREATED",
        "FAILURE",
    ]);
    for workload in &workloads {
        table.row(row(workload));
    }
    table.print_or("No workloads.")
}

fn row(workload: &Workload) -> Vec<String> {
    let mut status = output::label(&workload.status, "WORKLOAD_STATUS_");
    if workload.failure_reason.to_i32() != 0 {
        status = format!(
            "{status} ({})",
            output::label(&workload.failure_reason, "WORKLOAD_FAILURE_REASON_")
        );
    }
    vec![
        resolve::id_of(&workload.meta),
        output::or_dash(&workload.agent_name),
        status,
        output::label(&workload.agent_state, "WORKLOAD_AGENT_STATE_"),
        workload.thread_id.clone(),
        output::or_dash(&workload.runner_name),
        resolve::created_of(&workload.meta),
        output::or_dash(&workload.failure_message),
    ]
}

async fn by_thread(session: &Session, thread_id: &str) -> Result<Vec<Workload>> {
    let client = session.gateway.runners();
    let mut workloads = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_workloads_by_thread(ListWorkloadsByThreadRequest {
                thread_id: thread_id.to_string(),
                page_size: resolve::PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        workloads.extend(page.workloads);
        if page.next_page_token.is_empty() {
            return Ok(workloads);
        }
        page_token = page.next_page_token;
    }
}

async fn by_organization(session: &Session, organization_id: &str) -> Result<Vec<Workload>> {
    let client = session.gateway.runners();
    let mut workloads = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_workloads(ListWorkloadsRequest {
                organization_id: organization_id.to_string(),
                page_size: resolve::PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        workloads.extend(page.workloads);
        if page.next_page_token.is_empty() {
            return Ok(workloads);
        }
        page_token = page.next_page_token;
    }
}

/// Streams a container's log to standard output as the chunks arrive.
/// With `--json` each chunk is one line of proto JSON, with the bytes in
/// base64. Keepalive chunks, which are empty, are skipped.
pub async fn logs(args: LogsArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    let gateway = session.gateway.without_default_timeout();
    let mut stream = gateway
        .runners()
        .stream_workload_logs_with_options(
            StreamWorkloadLogsRequest {
                workload_id: args.workload,
                container_name: args.container,
                follow: args.follow,
                tail_lines: args.tail.unwrap_or(0),
                ..Default::default()
            },
            streaming(),
        )
        .await?;
    while let Some(message) = stream.message().await? {
        let response = message.to_owned_message();
        let Some(chunk) = response.chunk.as_option() else {
            continue;
        };
        if chunk.data.is_empty() {
            continue;
        }
        if session.json {
            output::print_json(&response)?;
        } else {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&chunk.data)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_client::runners::{WorkloadFailureReason, WorkloadStatus};

    #[test]
    fn failed_row_shows_reason_and_message() {
        let workload = Workload {
            status: WorkloadStatus::WORKLOAD_STATUS_FAILED.into(),
            failure_reason: WorkloadFailureReason::WORKLOAD_FAILURE_REASON_CONFIG_INVALID.into(),
            failure_message: "model m of agent a not found in organization o".to_string(),
            ..Default::default()
        };
        let cells = row(&workload);
        assert_eq!(cells[2], "failed (config_invalid)");
        assert_eq!(cells[7], "model m of agent a not found in organization o");
    }

    #[test]
    fn running_row_has_no_failure() {
        let workload = Workload {
            status: WorkloadStatus::WORKLOAD_STATUS_RUNNING.into(),
            ..Default::default()
        };
        let cells = row(&workload);
        assert_eq!(cells[2], "running");
        assert_eq!(cells[7], "-");
    }
}
