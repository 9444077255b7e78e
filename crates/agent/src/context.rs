//! The model's input of a turn: the instructions, and the thread's
//! messages as Responses API input items.

use std::collections::HashMap;

use agyn_client::{agents, threads};
use base64::Engine as _;
use serde_json::{Value, json};

/// Largest image attachment sent to the model inline.
pub const MAX_INLINE_IMAGE_BYTES: usize = 5 * 1024 * 1024;

/// Returns the longest prefix of `text` of at most `max_bytes` bytes that
/// ends on a character boundary.
pub fn truncate_utf8(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Returns the idempotency key of a turn's reply: the UUIDv5 (RFC 9562,
/// SHA-1 based) of the first batch message id, in the namespace of the
/// workload id. Every attempt of the same turn in the same workload sends
/// the same key, so the thread stores the reply once.
pub fn reply_request_id(workload_id: &str, first_message_id: &str) -> String {
    use sha1::Digest as _;
    let namespace = uuid::Uuid::parse_str(workload_id).unwrap_or_default();
    let mut hasher = sha1::Sha1::new();
    hasher.update(namespace.as_bytes());
    hasher.update(first_message_id.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The agent as the platform note describes it.
#[derive(Debug, Clone, Default)]
pub struct AgentProfile {
    pub name: String,
    pub nickname: String,
    pub role: String,
}

/// Builds the instructions: the system prompt, a Skills section and a
/// short note about the platform, the agent and the thread's participants.
pub fn instructions(
    system_prompt: &str,
    skills: &[agents::Skill],
    profile: &AgentProfile,
    agent_id: &str,
    participants: &[threads::Participant],
) -> String {
    let mut sections = Vec::new();
    if !system_prompt.trim().is_empty() {
        sections.push(system_prompt.trim().to_string());
    }
    if !skills.is_empty() {
        let mut text = String::from("# Skills\n");
        for skill in skills {
            text.push_str(&format!("\n## {}\n", skill.name));
            if !skill.description.trim().is_empty() {
                text.push_str(&format!("{}\n", skill.description.trim()));
            }
            text.push_str(&format!("\n{}\n", skill.body.trim_end()));
        }
        sections.push(text.trim_end().to_string());
    }
    sections.push(platform_note(profile, agent_id, participants));
    sections.join("\n\n")
}

fn platform_note(
    profile: &AgentProfile,
    agent_id: &str,
    participants: &[threads::Participant],
) -> String {
    let mut identity = profile.name.clone();
    if !profile.nickname.is_empty() {
        identity.push_str(&format!(" (@{})", profile.nickname));
    }
    let mut note = format!(
        "# Platform\nYou are {identity}, an agent on the agyn platform, in a conversation thread."
    );
    if !profile.role.is_empty() {
        note.push_str(&format!(" Your role: {}.", profile.role));
    }
    note.push_str(
        " Each user message starts with `@<handle>: ` naming its sender. Your reply is posted \
         to the thread as one message. Attached files appear as agyn://file/<id> lines.",
    );
    let others: Vec<String> = participants
        .iter()
        .filter(|participant| participant.id != agent_id)
        .map(|participant| {
            let kind = identity_kind(participant);
            if participant.nickname.is_empty() {
                format!("- {} ({kind}, no handle)", participant.id)
            } else {
                format!("- @{} ({kind})", participant.nickname)
            }
        })
        .collect();
    if !others.is_empty() {
        note.push_str("\n\nOther participants of the thread:\n");
        note.push_str(&others.join("\n"));
    }
    note
}

/// Names the participant's identity type by its `IdentityType` number.
fn identity_kind(participant: &threads::Participant) -> &'static str {
    match participant.identity_type.to_i32() {
        1 => "agent",
        4 => "user",
        5 => "app",
        _ => "participant",
    }
}

/// An attachment of a message, as described to the model.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub file_id: String,
    /// `(<filename>, <content type>)`, or `(unavailable)` when its metadata
    /// could not be read.
    pub description: String,
    /// A `data:` URL for an image of at most [`MAX_INLINE_IMAGE_BYTES`].
    pub image_url: Option<String>,
}

impl Attachment {
    /// Builds the attachment of an image or other file from its metadata
    /// and, for an image, its content.
    pub fn new(file_id: &str, filename: &str, content_type: &str, image: Option<&[u8]>) -> Self {
        Self {
            file_id: file_id.to_string(),
            description: format!("({filename}, {content_type})"),
            image_url: image.map(|bytes| {
                let media_type = content_type
                    .split(';')
                    .next()
                    .unwrap_or(content_type)
                    .trim();
                format!(
                    "data:{media_type};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                )
            }),
        }
    }

    pub fn unavailable(file_id: &str) -> Self {
        Self {
            file_id: file_id.to_string(),
            description: "(unavailable)".to_string(),
            image_url: None,
        }
    }
}

/// Converts one thread message into an input item. Messages of the agent
/// become assistant messages; the others become user messages that start
/// with the sender's handle (or id) and list their attachments.
pub fn message_item(
    message: &threads::Message,
    agent_id: &str,
    handles: &HashMap<String, String>,
    attachments: &[Attachment],
) -> Value {
    if message.sender_id == agent_id {
        return json!({
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": message.body}],
        });
    }
    let sender = handles
        .get(&message.sender_id)
        .filter(|handle| !handle.is_empty())
        .map(|handle| format!("@{handle}"))
        .unwrap_or_else(|| format!("@{}", message.sender_id));
    let mut text = format!("{sender}: {}", message.body);
    for attachment in attachments {
        text.push_str(&format!(
            "\nagyn://file/{} {}",
            attachment.file_id, attachment.description
        ));
    }
    let mut content = vec![json!({"type": "input_text", "text": text})];
    for attachment in attachments {
        if let Some(url) = &attachment.image_url {
            content.push(json!({"type": "input_image", "image_url": url}));
        }
    }
    json!({"type": "message", "role": "user", "content": content})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }

    #[test]
    fn request_id_is_uuid_v5() {
        // Python: uuid.uuid5(uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "python.org")
        let id = reply_request_id("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "python.org");
        assert_eq!(id, "886313e1-3b8a-5372-9b90-0c9aee199e5d");
    }

    #[test]
    fn user_messages_name_their_sender() {
        let message = threads::Message {
            sender_id: "u1".into(),
            body: "hello".into(),
            ..Default::default()
        };
        let handles = HashMap::from([("u1".to_string(), "alice".to_string())]);
        let attachment = Attachment::new("f1", "a.png", "image/png", Some(b"png"));
        let item = message_item(&message, "agent", &handles, &[attachment]);
        assert_eq!(item["role"], "user");
        assert_eq!(
            item["content"][0]["text"],
            "@alice: hello\nagyn://file/f1 (a.png, image/png)"
        );
        assert_eq!(
            item["content"][1]["image_url"],
            "data:image/png;base64,cG5n"
        );
    }

    #[test]
    fn agent_messages_are_assistant_output() {
        let message = threads::Message {
            sender_id: "agent".into(),
            body: "done".into(),
            ..Default::default()
        };
        let item = message_item(&message, "agent", &HashMap::new(), &[]);
        assert_eq!(item["role"], "assistant");
        assert_eq!(item["content"][0]["type"], "output_text");
    }
}
