//! `agyn send` and `agyn messages`: the messages of a conversation.

use std::collections::HashMap;
use std::io::Read as _;

use agyn_client::Gateway;
use agyn_client::chat::GetConversationRequest;
use agyn_client::threads::{
    GetMessagesRequest, GetMessagesResponse, Message, MessageOrder, SendMessageRequest,
};
use clap::Args;

use crate::error::{CliError, Result};
use crate::output::{self, Table};
use crate::reply;
use crate::resolve;
use crate::session::{GlobalArgs, Session};

#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// Conversation id
    #[arg(value_parser = crate::resolve::parse_conversation_id)]
    pub conversation: String,

    /// Message text, or `-` to read it from standard input
    pub text: String,

    /// Wait for the next message from another participant and print it.
    /// The wait fails early when the conversation is degraded or archived
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits, such as `120s` or `5m`
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = crate::agents::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct MessagesArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// Conversation id
    #[arg(value_parser = crate::resolve::parse_conversation_id)]
    pub conversation: String,

    /// Print only the newest N messages (still oldest first)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// Sends a message with a fresh idempotency key and, with `--wait`,
/// prints the next message from another participant.
pub async fn send(args: SendArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    let body = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| {
                CliError::failed(format!(
                    "failed to read the message from standard input: {error}"
                ))
            })?;
        text
    } else {
        args.text
    };

    // The subscription is open before the message is sent, so a reply
    // cannot slip in between.
    let mut watch = if args.wait {
        Some(reply::ReplyWatch::open(&session.gateway, &args.conversation).await?)
    } else {
        None
    };

    let threads = session.gateway.threads();
    let sending = threads.send_message(SendMessageRequest {
        thread_id: args.conversation.clone(),
        body,
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    });
    let sent = match watch.as_mut() {
        Some(watch) => tokio::select! {
            sent = sending => sent?,
            () = watch.interrupted() => {
                return Err(CliError::Interrupted(format!(
                    "interrupted before the gateway confirmed the message. \
                     `agyn messages {}` shows whether it was stored",
                    args.conversation
                )));
            }
        },
        None => sending.await?,
    }
    .into_owned();
    let sent_id = sent
        .message
        .as_option()
        .map(|message| resolve::id_of(&message.meta))
        .unwrap_or_default();

    if session.json {
        output::print_json(&sent)?;
    } else if watch.is_none() {
        let mut table = Table::new(&["MESSAGE ID", "CONVERSATION ID", "SENT AT"]);
        let created = sent
            .message
            .as_option()
            .map(|message| resolve::created_of(&message.meta))
            .unwrap_or_default();
        table.row(vec![sent_id.clone(), args.conversation.clone(), created]);
        output::print(&table.render())?;
    }

    let Some(watch) = watch else {
        return Ok(());
    };
    let reply = watch.wait(&sent_id, args.timeout).await?;
    if session.json {
        return output::print_json(&serde_json::json!({ "message": reply }));
    }
    let labels = participant_labels(&session.gateway, &args.conversation)
        .await
        .unwrap_or_default();
    output::print(&render_messages(std::slice::from_ref(&reply), &labels))
}

/// Prints a conversation's messages, oldest first.
pub async fn messages(args: MessagesArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    // GetConversation first, so an unknown id fails with the chat
    // service's not_found before any message is read.
    let labels = participant_labels(&session.gateway, &args.conversation).await?;
    let messages = match args.limit {
        Some(limit) => newest(&session.gateway, &args.conversation, limit as usize).await?,
        None => all(&session.gateway, &args.conversation).await?,
    };
    if session.json {
        return output::print_json(&GetMessagesResponse {
            messages,
            ..Default::default()
        });
    }
    if messages.is_empty() {
        return output::print("No messages.\n");
    }
    output::print(&render_messages(&messages, &labels))
}

/// Returns a label by participant id: `@nickname`, or an agent's name,
/// for the participants that have one.
async fn participant_labels(
    gateway: &Gateway,
    conversation_id: &str,
) -> Result<HashMap<String, String>> {
    let conversation = gateway
        .chat()
        .get_conversation(GetConversationRequest {
            id: conversation_id.to_string(),
            ..Default::default()
        })
        .await?
        .into_owned();
    let Some(conversation) = conversation.conversation.as_option() else {
        return Ok(HashMap::new());
    };
    // Labels only decorate the output, and participants from outside the
    // organization may not list its agents.
    let mut labels = resolve::agent_labels(gateway, &conversation.organization_id)
        .await
        .unwrap_or_default();
    for participant in &conversation.participants {
        if !participant.nickname.is_empty() {
            labels.insert(participant.id.clone(), format!("@{}", participant.nickname));
        }
    }
    Ok(labels)
}

/// Reads every message, oldest first.
async fn all(gateway: &Gateway, thread_id: &str) -> Result<Vec<Message>> {
    let client = gateway.threads();
    let mut messages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .get_messages(GetMessagesRequest {
                thread_id: thread_id.to_string(),
                order: MessageOrder::MESSAGE_ORDER_OLDEST_FIRST.into(),
                page_size: resolve::PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        messages.extend(page.messages);
        if page.next_page_token.is_empty() {
            return Ok(messages);
        }
        page_token = page.next_page_token;
    }
}

/// Reads the newest `limit` messages and returns them oldest first.
async fn newest(gateway: &Gateway, thread_id: &str, limit: usize) -> Result<Vec<Message>> {
    let client = gateway.threads();
    let mut messages = Vec::new();
    let mut page_token = String::new();
    while messages.len() < limit {
        let remaining = (limit - messages.len()).min(resolve::PAGE_SIZE as usize);
        let page = client
            .get_messages(GetMessagesRequest {
                thread_id: thread_id.to_string(),
                order: MessageOrder::MESSAGE_ORDER_NEWEST_FIRST.into(),
                page_size: remaining as i32,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        messages.extend(page.messages);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    messages.truncate(limit);
    messages.reverse();
    Ok(messages)
}

/// Renders messages as blocks: a line with the time, the sender's
/// nickname when known and the sender's id, then the body indented by two
/// spaces, and a blank line.
pub fn render_messages(messages: &[Message], labels: &HashMap<String, String>) -> String {
    let mut out = String::new();
    for message in messages {
        let sender = match labels.get(&message.sender_id) {
            Some(label) => format!("{label} {}", message.sender_id),
            None => message.sender_id.clone(),
        };
        out.push_str(&format!(
            "{}  {sender}\n",
            resolve::created_of(&message.meta)
        ));
        for line in message.body.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        for file_id in &message.file_ids {
            out.push_str(&format!("  [file {file_id}]\n"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_client::threads::EntityMeta;

    fn message(sender_id: &str, body: &str) -> Message {
        Message {
            meta: EntityMeta {
                id: "m".to_string(),
                ..Default::default()
            }
            .into(),
            sender_id: sender_id.to_string(),
            body: body.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn render_labels_known_senders() {
        let labels = HashMap::from([("agent-1".to_string(), "@helper".to_string())]);
        let text = render_messages(
            &[
                message("user-1", "hello"),
                message("agent-1", "Hi!\nHow can I help?"),
            ],
            &labels,
        );
        assert_eq!(
            text,
            "-  user-1\n  hello\n\n-  @helper agent-1\n  Hi!\n  How can I help?\n\n"
        );
    }
}
