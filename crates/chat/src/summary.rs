//! The summary post-send hook: a user's message into a conversation
//! without a summary sets it from the message's first line.

use std::future::Future;
use std::pin::Pin;

use agyn_core::time::now_micros;
use agyn_core::{IdentityKind, Result};
use agyn_store::Db;
use agyn_threads::{PostSendHook, SentMessage};

use crate::store;

/// Characters of the first line kept in a summary set by a message.
pub const SUMMARY_FROM_MESSAGE_CHARS: usize = 80;

/// Sets a conversation's absent summary from a user's message. Register
/// it with [`agyn_threads::Threads::with_post_send_hook`].
pub struct SummaryHook {
    db: Db,
}

impl SummaryHook {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl PostSendHook for SummaryHook {
    fn after_send<'a>(
        &'a self,
        sent: &'a SentMessage,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            if sent.sender_kind != IdentityKind::User {
                return Ok(());
            }
            let Some(summary) = summary_from_body(&sent.message.body) else {
                return Ok(());
            };
            let mut connection = self.db.pool().acquire().await?;
            // The update only fills an absent summary, so an explicit
            // summary always wins and concurrent sends cannot overwrite
            // each other.
            store::set_summary_if_absent(
                &mut connection,
                &sent.message.thread_id,
                &summary,
                now_micros(),
            )
            .await?;
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
