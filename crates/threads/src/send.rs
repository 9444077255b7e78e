//! SendMessage: the checks that run concurrently for each call, before the
//! send joins the queue of the [`writer`](crate::writer) that stores it.

use agyn_authz::{ObjectRef, missing_permission};
use agyn_core::error::Code;
use agyn_core::id::parse_id;
use agyn_core::{Caller, Error, Result};

use crate::ops::ensure_open;
use crate::store::{MessageRecord, ThreadStatus};
use crate::writer::{Queue, SendRequest, Writer};
use crate::{Threads, identity_of, keys, thread_object};

/// Maximum message body size, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 65_536;
/// Maximum number of files attached to one message.
pub const MAX_FILES: usize = 10;

/// Request of SendMessage.
#[derive(Debug, Clone, Copy)]
pub struct SendInput<'a> {
    pub thread_id: &'a str,
    pub body: &'a str,
    pub file_ids: &'a [String],
    pub request_id: &'a str,
}

impl Threads {
    /// SendMessage: `can_write` on the thread, which participants hold
    /// and so do apps granted `thread_write` on the organization. The
    /// thread must be ACTIVE. Every participant except the sender gets an
    /// unacked row. A repeat with the same `request_id` returns the first
    /// message and creates no rows, events or hook runs, also after the
    /// thread was archived or degraded.
    ///
    /// Once every check has passed, the send waits for the writer task,
    /// which stores the sends queued meanwhile in one transaction.
    pub async fn send_message(
        &self,
        caller: &Caller,
        input: &SendInput<'_>,
    ) -> Result<MessageRecord> {
        let (sender_id, sender_kind) = identity_of(caller)?;
        let thread_id = parse_id("thread_id", input.thread_id)?;
        let file_ids = validate_content(input.body, input.file_ids)?;
        keys::validate(input.request_id)?;
        let status = self
            .check_can_write(sender_id, &thread_id, !file_ids.is_empty())
            .await?;
        match ensure_open(status) {
            Ok(()) => self.check_attachments(caller, &file_ids).await?,
            // A retry of a send stored before the thread closed still gets
            // its message. The writer looks the request id up first, and
            // fails on the thread's status when the id is new.
            Err(_) if !input.request_id.is_empty() => {}
            Err(error) => return Err(error),
        }

        let fingerprint = keys::fingerprint(
            [thread_id.as_str(), input.body]
                .into_iter()
                .chain(file_ids.iter().map(String::as_str)),
        );
        let request = SendRequest {
            sender_id: sender_id.to_string(),
            sender_kind,
            thread_id,
            body: input.body.to_string(),
            file_ids,
            request_id: input.request_id.to_string(),
            fingerprint,
        };
        self.queue().submit(request).await
    }

    /// Returns the writer's queue, starting the writer on first use.
    fn queue(&self) -> &Queue {
        self.writer.get_or_init(|| {
            Queue::start(Writer {
                db: self.db.clone(),
                events: self.events.clone(),
                hooks: self.hooks.clone(),
                cache: self.cache.clone(),
            })
        })
    }

    /// Finds the thread (`not_found`), requires `can_write` on it and
    /// returns its status. The facts come from the cache unless `fresh` is
    /// set, as it is for a send with files, so that a thread closed on
    /// another replica fails on its status before the files are checked.
    ///
    /// `can_write` is `participant`, or `thread_write` on the
    /// organization. The participant branch is evaluated on the thread's
    /// participant list, which names the same identities as its
    /// `participant` tuples, because both are written in one transaction
    /// and neither is removed while the thread exists. Any other sender is
    /// checked by the authorizer. A denied sender of a cached thread makes
    /// the thread be read again, so that a deleted thread is `not_found`.
    async fn check_can_write(
        &self,
        sender_id: &str,
        thread_id: &str,
        fresh: bool,
    ) -> Result<ThreadStatus> {
        let cached = if fresh {
            None
        } else {
            self.cache.lookup(thread_id, sender_id)
        };
        let (status, participant) = match cached {
            Some(facts) => facts,
            None => {
                let thread = self.thread_or_not_found(thread_id).await?;
                self.cache.store(&thread);
                (thread.status, thread.participant(sender_id).is_some())
            }
        };
        if participant {
            return Ok(status);
        }
        let thread = thread_object(thread_id);
        if self
            .authorizer
            .check(&ObjectRef::identity(sender_id), "can_write", &thread)
            .await?
        {
            return Ok(status);
        }
        if cached.is_some() {
            self.cache.forget(thread_id);
            self.thread_or_not_found(thread_id).await?;
        }
        Err(missing_permission("can_write", &thread))
    }

    /// Requires every attached file to exist and be readable by the
    /// sender. Both failures read `file_ids[i]: file not found`, so the
    /// error reveals nothing about files the sender cannot read.
    async fn check_attachments(&self, caller: &Caller, file_ids: &[String]) -> Result<()> {
        if file_ids.is_empty() {
            return Ok(());
        }
        let Some(files) = &self.files else {
            return Ok(());
        };
        for (index, file_id) in file_ids.iter().enumerate() {
            match files.check_readable(caller, file_id).await {
                Ok(()) => {}
                Err(error) if matches!(error.code(), Code::NotFound | Code::PermissionDenied) => {
                    return Err(Error::invalid_field(
                        &format!("file_ids[{index}]"),
                        "file not found",
                    ));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Checks a message's body and files and returns the canonical file ids.
fn validate_content(body: &str, file_ids: &[String]) -> Result<Vec<String>> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::invalid_field(
            "body",
            &format!("must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    if body.contains('\0') {
        return Err(Error::invalid_field(
            "body",
            "must not contain NUL characters",
        ));
    }
    if file_ids.len() > MAX_FILES {
        return Err(Error::invalid_field(
            "file_ids",
            &format!("must have at most {MAX_FILES} entries"),
        ));
    }
    let file_ids = file_ids
        .iter()
        .enumerate()
        .map(|(index, id)| parse_id(&format!("file_ids[{index}]"), id))
        .collect::<Result<Vec<_>>>()?;
    if body.trim().is_empty() && file_ids.is_empty() {
        return Err(Error::invalid_argument("body or file_ids required"));
    }
    Ok(file_ids)
}
