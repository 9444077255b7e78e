//! `agyn conversations`: chat records over threads with agents.

use std::collections::HashMap;

use agyn_client::chat::{
    Conversation, ConversationParticipant, ConversationThreadStatus, CreateConversationRequest,
    ListConversationsRequest, ListConversationsResponse,
};
use agyn_client::users::GetMeRequest;
use clap::{Args, Subcommand};

use crate::error::Result;
use crate::output::{self, Table};
use crate::resolve;
use crate::session::{GlobalArgs, OrgArgs, Session};

#[derive(Args, Debug)]
pub struct ConversationsArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(flatten)]
    pub org: OrgArgs,

    #[command(subcommand)]
    pub command: ConversationsCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConversationsCommand {
    /// Start a conversation between you and one or more agents
    Create {
        /// Agent id, nickname or name; repeat for several agents
        #[arg(long = "with", value_name = "AGENT", required = true)]
        with: Vec<String>,
        /// Summary shown in conversation lists, at most 200 characters.
        /// Without it, your first message's first line becomes the summary
        #[arg(long)]
        title: Option<String>,
    },
    /// List your conversations in the organization, newest first
    List,
}

pub async fn run(args: ConversationsArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    let organization_id = resolve::organization(&session.gateway, &args.org).await?;
    match args.command {
        ConversationsCommand::Create { with, title } => {
            let mut participant_ids = Vec::with_capacity(with.len());
            for agent in &with {
                participant_ids
                    .push(resolve::agent(&session.gateway, &organization_id, agent).await?);
            }
            let created = session
                .gateway
                .chat()
                .create_conversation(CreateConversationRequest {
                    organization_id: organization_id.clone(),
                    participant_ids,
                    summary: title,
                    request_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                })
                .await?
                .into_owned();
            if session.json {
                return output::print_json(&created);
            }
            let labels = Labels::load(&session, &organization_id).await?;
            print_table(&labels, created.conversation.as_option().into_iter())
        }
        ConversationsCommand::List => {
            let conversations = list(&session, &organization_id).await?;
            if session.json {
                return output::print_json(&ListConversationsResponse {
                    conversations,
                    ..Default::default()
                });
            }
            let labels = Labels::load(&session, &organization_id).await?;
            print_table(&labels, conversations.iter())
        }
    }
}

async fn list(session: &Session, organization_id: &str) -> Result<Vec<Conversation>> {
    let client = session.gateway.chat();
    let mut conversations = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_conversations(ListConversationsRequest {
                organization_id: organization_id.to_string(),
                page_size: resolve::PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        conversations.extend(page.conversations);
        if page.next_page_token.is_empty() {
            return Ok(conversations);
        }
        page_token = page.next_page_token;
    }
}

/// Labels of the WITH column: the caller's id, which the column leaves
/// out, and a label by agent id.
struct Labels {
    caller_id: String,
    agents: HashMap<String, String>,
}

impl Labels {
    async fn load(session: &Session, organization_id: &str) -> Result<Self> {
        let me = session
            .gateway
            .users()
            .get_me(GetMeRequest::default())
            .await?
            .into_owned();
        let caller_id = me
            .user
            .as_option()
            .map(|user| resolve::id_of(&user.meta))
            .unwrap_or_default();
        // Labels only decorate the output, and participants from outside
        // the organization may not list its agents.
        let agents = resolve::agent_labels(&session.gateway, organization_id)
            .await
            .unwrap_or_default();
        Ok(Self { caller_id, agents })
    }

    fn participant(&self, participant: &ConversationParticipant) -> String {
        if !participant.nickname.is_empty() {
            return format!("@{}", participant.nickname);
        }
        self.agents
            .get(&participant.id)
            .cloned()
            .unwrap_or_else(|| participant.id.clone())
    }
}

fn print_table<'a>(
    labels: &Labels,
    conversations: impl Iterator<Item = &'a Conversation>,
) -> Result<()> {
    let mut table = Table::new(&[
        "ID", "WITH", "STATUS", "MESSAGES", "UNREAD", "ACTIVITY", "SUMMARY",
    ]);
    for conversation in conversations {
        let others: Vec<String> = conversation
            .participants
            .iter()
            .filter(|participant| participant.id != labels.caller_id)
            .map(|participant| labels.participant(participant))
            .collect();
        table.row(vec![
            resolve::id_of(&conversation.meta),
            output::or_dash(&others.join(", ")),
            status(conversation),
            conversation.message_count.to_string(),
            conversation.unread_count.to_string(),
            output::label(
                &conversation.activity_status,
                "CONVERSATION_ACTIVITY_STATUS_",
            ),
            output::or_dash(conversation.summary.as_deref().unwrap_or_default()),
        ]);
    }
    table.print_or("No conversations.")
}

/// Returns the conversation's status, followed by its thread's when the
/// thread no longer accepts messages, as in `open (degraded)`.
fn status(conversation: &Conversation) -> String {
    let status = output::label(&conversation.status, "CONVERSATION_STATUS_");
    match conversation.thread_status.as_known() {
        Some(
            ConversationThreadStatus::CONVERSATION_THREAD_STATUS_UNSPECIFIED
            | ConversationThreadStatus::CONVERSATION_THREAD_STATUS_ACTIVE,
        ) => status,
        _ => {
            let thread = output::label(&conversation.thread_status, "CONVERSATION_THREAD_STATUS_");
            format!("{status} ({thread})")
        }
    }
}
