//! The summary post-send hook: a user's message into a conversation
//! without a summary sets it from the message's first line, inside the
//! send's transaction.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use agyn_core::time::now_micros;
use agyn_core::{IdentityKind, Result};
use agyn_store::Db;
use agyn_store::sqlx::AnyConnection;
use agyn_threads::{PostSendHook, SentMessage};

use crate::store;

/// Characters of the first line kept in a summary set by a message.
pub const SUMMARY_FROM_MESSAGE_CHARS: usize = 80;

/// Maximum number of threads whose kind the hook remembers. When full,
/// the hook clears the map and looks the threads up again.
const MAX_REMEMBERED_THREADS: usize = 65_536;

/// Sets a conversation's absent summary from a user's message. Register
/// it with [`agyn_threads::Threads::with_post_send_hook`].
pub struct SummaryHook {
    /// Whether each thread seen so far is a conversation. Both values are
    /// final, because a chat record is created in its thread's
    /// transaction and deleted only by the organization purge, shortly
    /// before its thread.
    conversations: Mutex<HashMap<String, bool>>,
}

impl SummaryHook {
    /// The hook writes through the send's transaction, so it keeps no
    /// handle on `_db`.
    pub fn new(_db: Db) -> Self {
        Self {
            conversations: Mutex::default(),
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        // The map has no invariant that a panicking holder could break.
        self.conversations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns whether each of `thread_ids` is a conversation, looking up
    /// the threads the hook has not seen yet.
    async fn conversation_flags(
        &self,
        connection: &mut AnyConnection,
        thread_ids: &[&str],
    ) -> Result<HashMap<String, bool>> {
        let mut flags = HashMap::with_capacity(thread_ids.len());
        let mut unknown = Vec::new();
        {
            let remembered = self.remembered();
            for id in thread_ids {
                match remembered.get(*id) {
                    Some(flag) => {
                        flags.insert(id.to_string(), *flag);
                    }
                    None => unknown.push(id.to_string()),
                }
            }
        }
        if unknown.is_empty() {
            return Ok(flags);
        }
        let found: HashSet<String> = store::conversation_ids(connection, &unknown)
            .await?
            .into_iter()
            .collect();
        let mut remembered = self.remembered();
        if remembered.len() + unknown.len() > MAX_REMEMBERED_THREADS {
            remembered.clear();
        }
        for id in unknown {
            let flag = found.contains(&id);
            remembered.insert(id.clone(), flag);
            flags.insert(id, flag);
        }
        Ok(flags)
    }
}

impl PostSendHook for SummaryHook {
    fn applies_to(&self, sent: &SentMessage) -> bool {
        sent.sender_kind == IdentityKind::User
            && self.remembered().get(&sent.message.thread_id) != Some(&false)
            && summary_from_body(&sent.message.body).is_some()
    }

    fn in_transaction<'a>(
        &'a self,
        connection: &'a mut AnyConnection,
        sent: &'a [&'a SentMessage],
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            // The first message of each thread is the one that finds the
            // summary absent, as if the messages had been sent one by one.
            let mut firsts: Vec<&SentMessage> = Vec::new();
            for message in sent {
                if !firsts
                    .iter()
                    .any(|first| first.message.thread_id == message.message.thread_id)
                {
                    firsts.push(message);
                }
            }
            let thread_ids: Vec<&str> = firsts
                .iter()
                .map(|first| first.message.thread_id.as_str())
                .collect();
            let flags = self.conversation_flags(connection, &thread_ids).await?;
            let now = now_micros();
            for first in firsts {
                if flags.get(&first.message.thread_id) != Some(&true) {
                    continue;
                }
                let Some(summary) = summary_from_body(&first.message.body) else {
                    continue;
                };
                // The update only fills an absent summary, so an explicit
                // summary always wins and concurrent sends cannot
                // overwrite each other.
                store::set_summary_if_absent(connection, &first.message.thread_id, &summary, now)
                    .await?;
            }
            Ok(())
        })
    }
}

/// Returns the first line of `body`, trimmed and cut to 80 characters, or
/// `None` when that line is blank.
pub fn summary_from_body(body: &str) -> Option<String> {
    let line = body.lines().next()?.trim();
    if line.is_empty() {
        return None;
    }
    let cut: String = line.chars().take(SUMMARY_FROM_MESSAGE_CHARS).collect();
    Some(cut.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_trimmed_first_line() {
        assert_eq!(
            summary_from_body("  Deploy plan \nsecond line").as_deref(),
            Some("Deploy plan")
        );
        assert_eq!(summary_from_body("one\r\ntwo").as_deref(), Some("one"));
    }

    #[test]
    fn summary_cuts_at_character_boundary() {
        let long = "é".repeat(100);
        let summary = summary_from_body(&long).unwrap();
        assert_eq!(summary.chars().count(), 80);
        assert!(summary.chars().all(|c| c == 'é'));
    }

    #[test]
    fn blank_first_line_gives_no_summary() {
        assert_eq!(summary_from_body(""), None);
        assert_eq!(summary_from_body("   \nlater"), None);
    }
}
