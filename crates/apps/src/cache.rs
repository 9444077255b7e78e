//! The per-replica cache of installations by (organization, slug) that the
//! app proxy routes with.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{AppRecord, InstallationRecord};

/// How long an entry is used before the proxy reads the database again,
/// which bounds how late other replicas see a renamed slug or a new
/// endpoint.
const ENTRY_TTL: Duration = Duration::from_secs(10);

/// An installation with its app, as the proxy needs them.
pub(crate) type Routed = (InstallationRecord, AppRecord);

#[derive(Default)]
pub(crate) struct InstallationCache {
    entries: Mutex<HashMap<(String, String), (Instant, Routed)>>,
}

impl InstallationCache {
    pub(crate) fn get(&self, org_id: &str, slug: &str) -> Option<Routed> {
        let entries = self.entries.lock().expect("the cache lock is not poisoned");
        let key = (org_id.to_string(), slug.to_string());
        entries
            .get(&key)
            .filter(|(stored_at, _)| stored_at.elapsed() < ENTRY_TTL)
            .map(|(_, routed)| routed.clone())
    }

    pub(crate) fn put(&self, routed: &Routed) {
        let key = (routed.0.organization_id.clone(), routed.0.slug.clone());
        let mut entries = self.entries.lock().expect("the cache lock is not poisoned");
        entries.retain(|_, (stored_at, _)| stored_at.elapsed() < ENTRY_TTL);
        entries.insert(key, (Instant::now(), routed.clone()));
    }

    /// Drops the entry of installation `installation_id`.
    pub(crate) fn forget_installation(&self, installation_id: &str) {
        let mut entries = self.entries.lock().expect("the cache lock is not poisoned");
        entries.retain(|_, (_, (installation, _))| installation.id != installation_id);
    }

    /// Drops the entries of every installation of app `app_id`.
    pub(crate) fn forget_app(&self, app_id: &str) {
        let mut entries = self.entries.lock().expect("the cache lock is not poisoned");
        entries.retain(|_, (_, (_, app))| app.id != app_id);
    }

    /// Drops the entries of installations into `org_id` and of apps it
    /// owns.
    pub(crate) fn forget_organization(&self, org_id: &str) {
        let mut entries = self.entries.lock().expect("the cache lock is not poisoned");
        entries.retain(|_, (_, (installation, app))| {
            installation.organization_id != org_id && app.organization_id != org_id
        });
    }
}
