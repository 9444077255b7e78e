//! The read rule of file metadata, download links and content.

use agyn_authz::ObjectRef;
use agyn_core::{Caller, Error, Result};

use crate::model::FileRecord;
use crate::{Files, db};

impl Files {
    /// Succeeds when `caller` may read `file`: a component, the uploader,
    /// a caller with `can_read` on the file's organization, or one with
    /// `can_read` on a thread that has a message referencing the file.
    /// Otherwise `permission_denied`.
    pub(crate) async fn authorize_read(&self, caller: &Caller, file: &FileRecord) -> Result<()> {
        let identity_id = match caller {
            // Components perform no relationship checks.
            Caller::Component(_) => return Ok(()),
            Caller::Identity { identity_id, .. } => identity_id,
        };
        if *identity_id == file.uploader_id {
            return Ok(());
        }
        let identity = ObjectRef::identity(identity_id);
        if let Some(org_id) = &file.organization_id {
            let org = agyn_orgs::org_object(org_id);
            if self.authorizer.check(&identity, "can_read", &org).await? {
                return Ok(());
            }
        }
        // NOTE: only the first MAX_REFERENCING_THREADS threads that
        // reference the file are checked.
        for thread_id in db::threads_referencing(&self.db, &file.id).await? {
            let thread = ObjectRef::new("thread", &thread_id);
            if self
                .authorizer
                .check(&identity, "can_read", &thread)
                .await?
            {
                return Ok(());
            }
        }
        Err(Error::permission_denied(format!(
            "permission denied: can_read on file {}",
            file.id
        )))
    }
}
