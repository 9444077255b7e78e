//! Thread operations, independent of the RPC layer: creating, reading and
//! listing threads, adding participants and the terminal status changes.
//! Each operation states its authorization rule first. Message and
//! read-state operations are in the `messages` module.

use agyn_authz::{ObjectRef, Tuple, missing_permission};
use agyn_core::id::parse_id;
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};

use crate::participants::ParticipantEntry;
use crate::store::{self, ParticipantRecord, ThreadRecord, ThreadScope, ThreadStatus};
use crate::{MAX_PARTICIPANTS, Threads, agent_object, cluster, identity_of, keys, thread_object};

/// Maximum number of ids in one BatchGetThreads call.
pub const MAX_BATCH_IDS: usize = 200;

/// Attempts of a write transaction that lost a race on a unique key
/// before the call fails with `unavailable`.
pub(crate) const WRITE_ATTEMPTS: usize = 5;

const CREATE_SCOPE: &str = "threads.CreateThread";
const ADD_PARTICIPANT_SCOPE: &str = "threads.AddParticipant";

/// View of ListThreads: the caller's threads or an organization's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListView {
    /// Threads where the caller is a participant.
    Mine,
    /// Every thread of one organization.
    Organization,
}

impl Threads {
    /// CreateThread: `can_create_thread` on the organization and
    /// `can_initiate` on every agent participant other than the caller
    /// (see [`Threads::plan_thread`] for every rule). A repeat with the
    /// same `request_id` returns the first thread.
    pub async fn create_thread(
        &self,
        caller: &Caller,
        organization_id: Option<&str>,
        entries: &[ParticipantEntry],
        request_id: &str,
    ) -> Result<ThreadRecord> {
        keys::validate(request_id)?;
        let plan = self.plan_thread(caller, organization_id, entries).await?;
        let fingerprint = plan.fingerprint();
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            if let Some(id) = keys::replayed(
                &mut tx,
                CREATE_SCOPE,
                &plan.creator_id,
                request_id,
                &fingerprint,
            )
            .await?
            {
                tx.commit().await?;
                return self.thread_or_not_found(&id).await;
            }
            let created = async {
                let thread = self.create_thread_in(&mut tx, &plan).await?;
                keys::record(
                    &mut tx,
                    CREATE_SCOPE,
                    &plan.creator_id,
                    request_id,
                    &fingerprint,
                    &thread.id,
                )
                .await?;
                Ok::<_, Error>(thread)
            }
            .await;
            let thread = match created {
                Ok(thread) => thread,
                // A concurrent call recorded the same key first: start
                // over and return what it created.
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            };
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            tracing::info!(
                thread_id = %thread.id,
                organization_id = %thread.organization_id,
                participants = thread.participants.len(),
                "Thread created"
            );
            self.cache.store(&thread);
            return Ok(thread);
        }
        Err(write_conflict())
    }

    /// GetThread: `can_read` on the thread.
    pub async fn get_thread(&self, caller: &Caller, id: &str) -> Result<ThreadRecord> {
        let (caller_id, _) = identity_of(caller)?;
        let id = parse_id("id", id)?;
        let thread = self.thread_or_not_found(&id).await?;
        self.authorizer
            .require(
                &ObjectRef::identity(caller_id),
                "can_read",
                &thread_object(&id),
            )
            .await?;
        Ok(thread)
    }

    /// ListThreads: view MINE needs no check, because it is a filter on
    /// the caller's participation. View ORGANIZATION needs
    /// `can_view_threads` on the organization. Newest first.
    pub async fn list_threads(
        &self,
        caller: &Caller,
        view: ListView,
        organization_id: Option<&str>,
        statuses: &[ThreadStatus],
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ThreadRecord>, String)> {
        let (caller_id, _) = identity_of(caller)?;
        let org_id = organization_id
            .map(|id| parse_id("organization_id", id))
            .transpose()?;

        let mut statuses = statuses.to_vec();
        statuses.sort();
        statuses.dedup();
        let view_name = match view {
            ListView::Mine => "mine",
            ListView::Organization => "organization",
        };
        let status_names: Vec<&str> = statuses.iter().map(|status| status.as_str()).collect();
        let fingerprint = Fingerprint::new("agynio.api.threads.v1.ListThreads")
            .with(caller_id)
            .with(view_name)
            .with(org_id.as_deref().unwrap_or(""))
            .with(&status_names.join(","));
        let page = Page::parse(page_size, page_token, SortOrder::Descending, fingerprint)?;

        let scope = match view {
            ListView::Mine => ThreadScope::Participant(caller_id),
            ListView::Organization => {
                let org_id = org_id
                    .as_deref()
                    .ok_or_else(|| Error::invalid_field("organization_id", "is required"))?;
                self.authorizer
                    .require(
                        &ObjectRef::identity(caller_id),
                        "can_view_threads",
                        &crate::org_object(org_id),
                    )
                    .await?;
                ThreadScope::Organization(org_id)
            }
        };
        let mut connection = self.db.pool().acquire().await?;
        store::list_threads(&mut connection, scope, org_id.as_deref(), &statuses, &page).await
    }

    /// AddParticipant: `can_add_participant` on the thread, plus
    /// `can_initiate` on the newcomer when it is an agent other than the
    /// caller. An identity that already takes part leaves the thread
    /// unchanged, and the newcomer gets no rows for earlier messages.
    pub async fn add_participant(
        &self,
        caller: &Caller,
        thread_id: &str,
        entry: &ParticipantEntry,
        passive: bool,
        request_id: &str,
    ) -> Result<ThreadRecord> {
        let (caller_id, _) = identity_of(caller)?;
        let thread_id = parse_id("thread_id", thread_id)?;
        keys::validate(request_id)?;
        let thread = self.thread_or_not_found(&thread_id).await?;
        let caller_ref = ObjectRef::identity(caller_id);
        self.authorizer
            .require(
                &caller_ref,
                "can_add_participant",
                &thread_object(&thread_id),
            )
            .await?;
        ensure_open(thread.status)?;
        self.ensure_organization_active(&thread.organization_id)
            .await?;
        let (id, kind) = self
            .resolve_participant(entry, &thread.organization_id)
            .await?;
        if kind == IdentityKind::Agent && id != caller_id {
            self.authorizer
                .require(&caller_ref, "can_initiate", &agent_object(&id))
                .await?;
        }

        let fingerprint = keys::fingerprint([
            thread_id.as_str(),
            id.as_str(),
            if passive { "1" } else { "0" },
        ]);
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            store::lock_thread(&mut tx, self.db.backend(), &thread_id).await?;
            if keys::replayed(
                &mut tx,
                ADD_PARTICIPANT_SCOPE,
                caller_id,
                request_id,
                &fingerprint,
            )
            .await?
            .is_some()
            {
                tx.commit().await?;
                return self.thread_or_not_found(&thread_id).await;
            }
            let current = store::thread_by_id(&mut tx, &thread_id)
                .await?
                .ok_or_else(|| Error::not_found("thread", &thread_id))?;
            ensure_open(current.status)?;

            let added = async {
                if current.participant(&id).is_none() {
                    if current.participants.len() >= MAX_PARTICIPANTS {
                        return Err(Error::failed_precondition(
                            "thread has too many participants",
                        ));
                    }
                    let now = now_micros();
                    let participant = ParticipantRecord {
                        id: id.clone(),
                        kind,
                        joined_at: now,
                        passive,
                    };
                    store::insert_participant(&mut tx, &thread_id, &participant).await?;
                    self.authorizer
                        .write_in(
                            &mut tx,
                            &[Tuple::new(
                                ObjectRef::identity(&id),
                                "participant",
                                thread_object(&thread_id),
                            )],
                            &[],
                        )
                        .await?;
                    store::touch_thread(&mut tx, &thread_id, now.max(current.updated_at)).await?;
                }
                keys::record(
                    &mut tx,
                    ADD_PARTICIPANT_SCOPE,
                    caller_id,
                    request_id,
                    &fingerprint,
                    &thread_id,
                )
                .await
            }
            .await;

            match added {
                Ok(()) => {}
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            let thread = self.thread_or_not_found(&thread_id).await?;
            self.cache.store(&thread);
            return Ok(thread);
        }
        Err(write_conflict())
    }

    /// DegradeThread: identities must be cluster admins. Component callers
    /// are restricted by the internal listener's caller lists. A thread
    /// that is not ACTIVE is returned unchanged.
    pub async fn degrade_thread(
        &self,
        caller: &Caller,
        id: &str,
        reason: &str,
    ) -> Result<ThreadRecord> {
        if let Caller::Identity { identity_id, .. } = caller
            && !self
                .authorizer
                .check(&ObjectRef::identity(identity_id), "admin", &cluster())
                .await?
        {
            return Err(missing_permission("admin", &cluster()));
        }
        let id = parse_id("id", id)?;
        if !is_valid_reason(reason) {
            return Err(Error::invalid_field(
                "reason",
                "must be 1 to 64 characters of [a-z0-9_]",
            ));
        }
        self.close_thread(&id, ThreadStatus::Degraded, reason).await
    }

    /// ArchiveThread (internal): the internal listener admits only operator
    /// tooling. A thread that is not ACTIVE is returned unchanged.
    pub async fn archive_thread(&self, id: &str) -> Result<ThreadRecord> {
        let id = parse_id("id", id)?;
        self.close_thread(&id, ThreadStatus::Archived, "").await
    }

    /// BatchGetThreads (internal): the threads among `ids` that exist, in
    /// no particular order.
    pub async fn batch_get_threads(&self, ids: &[String]) -> Result<Vec<ThreadRecord>> {
        if ids.len() > MAX_BATCH_IDS {
            return Err(Error::invalid_field(
                "ids",
                &format!("must name at most {MAX_BATCH_IDS} ids"),
            ));
        }
        let mut parsed = ids
            .iter()
            .enumerate()
            .map(|(index, id)| parse_id(&format!("ids[{index}]"), id))
            .collect::<Result<Vec<_>>>()?;
        parsed.sort();
        parsed.dedup();
        let mut connection = self.db.pool().acquire().await?;
        store::threads_by_ids(&mut connection, &parsed).await
    }

    /// Moves an ACTIVE thread to a terminal status. Any other thread is
    /// returned unchanged.
    async fn close_thread(
        &self,
        id: &str,
        status: ThreadStatus,
        degrade_reason: &str,
    ) -> Result<ThreadRecord> {
        let mut tx = self.db.begin_write().await?;
        store::lock_thread(&mut tx, self.db.backend(), id).await?;
        let mut thread = store::thread_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found("thread", id))?;
        if thread.status != ThreadStatus::Active {
            return Ok(thread);
        }
        thread.status = status;
        thread.degrade_reason = degrade_reason.to_string();
        thread.updated_at = now_micros().max(thread.updated_at);
        store::set_status(&mut tx, id, status, degrade_reason, thread.updated_at).await?;
        tx.commit().await?;
        self.cache.set_status(id, status);
        tracing::info!(
            thread_id = %id,
            status = status.as_str(),
            degrade_reason,
            "Thread closed"
        );
        Ok(thread)
    }

    /// Loads a thread, or `not_found`.
    pub(crate) async fn thread_or_not_found(&self, id: &str) -> Result<ThreadRecord> {
        let mut connection = self.db.pool().acquire().await?;
        store::thread_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("thread", id))
    }
}

/// Fails for ARCHIVED and DEGRADED threads, which accept no messages and
/// no participants.
pub(crate) fn ensure_open(status: ThreadStatus) -> Result<()> {
    match status {
        ThreadStatus::Active => Ok(()),
        ThreadStatus::Archived => {
            Err(Error::failed_precondition("thread archived").with_reason("THREAD_ARCHIVED"))
        }
        ThreadStatus::Degraded => {
            Err(Error::failed_precondition("thread degraded").with_reason("THREAD_DEGRADED"))
        }
    }
}

pub(crate) fn write_conflict() -> Error {
    Error::unavailable("the write kept conflicting with concurrent writes; retry the call")
}

/// Returns whether `reason` matches `^[a-z0-9_]{1,64}$`.
fn is_valid_reason(reason: &str) -> bool {
    !reason.is_empty()
        && reason.len() <= 64
        && reason
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}
