//! The thread facts that SendMessage checks before its transaction: the
//! status and the participant ids of each thread sent to recently.
//!
//! Both only move one way. ARCHIVED and DEGRADED are terminal, and
//! participants are never removed while their thread exists. So a cached
//! terminal status and a cached participant are never wrong about a
//! thread that still exists. A cached ACTIVE may be stale (another replica
//! closed the thread), and so may a participant list (another replica
//! added someone), or the thread may be gone (the organization purge
//! deleted it). The send transaction reads the thread again and decides,
//! so a stale entry changes only which error a failing send reports, and
//! the callers read the database again where that matters.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{ThreadRecord, ThreadStatus};

/// Maximum number of cached threads. When full, the cache is emptied,
/// which costs one read per thread that is sent to again.
const MAX_ENTRIES: usize = 65_536;

/// The cached facts of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadFacts {
    pub status: ThreadStatus,
    /// Identity ids of the participants, in the thread's order.
    pub participant_ids: Vec<String>,
}

impl ThreadFacts {
    fn of(thread: &ThreadRecord) -> Self {
        Self {
            status: thread.status,
            participant_ids: thread
                .participants
                .iter()
                .map(|participant| participant.id.clone())
                .collect(),
        }
    }

    fn has_participant(&self, identity_id: &str) -> bool {
        self.participant_ids.iter().any(|id| id == identity_id)
    }
}

#[derive(Debug, Default)]
pub(crate) struct ThreadCache {
    threads: Mutex<HashMap<String, ThreadFacts>>,
}

impl ThreadCache {
    /// Returns the cached status of the thread and whether `identity_id`
    /// is among its cached participants.
    pub(crate) fn lookup(
        &self,
        thread_id: &str,
        identity_id: &str,
    ) -> Option<(ThreadStatus, bool)> {
        self.lock()
            .get(thread_id)
            .map(|facts| (facts.status, facts.has_participant(identity_id)))
    }

    /// Stores what `thread`, just read or written, shows.
    pub(crate) fn store(&self, thread: &ThreadRecord) {
        let facts = ThreadFacts::of(thread);
        let mut threads = self.lock();
        if threads.get(&thread.id) == Some(&facts) {
            return;
        }
        if threads.len() >= MAX_ENTRIES && !threads.contains_key(&thread.id) {
            threads.clear();
        }
        threads.insert(thread.id.clone(), facts);
    }

    /// Records a new status of a cached thread.
    pub(crate) fn set_status(&self, thread_id: &str, status: ThreadStatus) {
        if let Some(facts) = self.lock().get_mut(thread_id) {
            facts.status = status;
        }
    }

    pub(crate) fn forget(&self, thread_id: &str) {
        self.lock().remove(thread_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ThreadFacts>> {
        // The map has no invariant that a panicking holder could break.
        self.threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
