//! The thread statuses that SendMessage checks before its transaction.
//!
//! ARCHIVED and DEGRADED are terminal, so a cached terminal status is
//! never stale. A cached ACTIVE may be: another replica may have closed
//! the thread, or the organization purge deleted it. The send transaction
//! reads the thread again and decides, so a stale entry can change only
//! which error a failing send reports first, and the callers re-read the
//! database where that order matters.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::ThreadStatus;

/// Maximum number of cached statuses. When full, the cache is emptied,
/// which costs one read per thread that is sent to again.
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct StatusCache {
    statuses: Mutex<HashMap<String, ThreadStatus>>,
}

impl StatusCache {
    pub(crate) fn get(&self, thread_id: &str) -> Option<ThreadStatus> {
        self.lock().get(thread_id).copied()
    }

    pub(crate) fn set(&self, thread_id: &str, status: ThreadStatus) {
        let mut statuses = self.lock();
        if statuses.len() >= MAX_ENTRIES && !statuses.contains_key(thread_id) {
            statuses.clear();
        }
        statuses.insert(thread_id.to_string(), status);
    }

    pub(crate) fn forget(&self, thread_id: &str) {
        self.lock().remove(thread_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ThreadStatus>> {
        // The map has no invariant that a panicking holder could break.
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
