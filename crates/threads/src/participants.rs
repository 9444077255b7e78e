//! Resolving participant identifiers and planning a new thread: every
//! check of CreateThread that runs before its transaction.

use agyn_authz::{ObjectRef, Tuple, TupleFilter};
use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};
use agyn_store::sqlx::AnyConnection;

use crate::store::{self, ParticipantRecord, ThreadRecord, ThreadStatus};
use crate::{MAX_PARTICIPANTS, Threads, agent_object, identity_of, org_object, thread_object};

/// Reference to an identity that should take part in a thread, by id or
/// by nickname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantRef {
    /// Identity id of a user, agent or app.
    Id(String),
    /// Nickname in the thread's organization, with or without the `@`.
    Nickname(String),
}

/// One participant entry of a request, with the request paths that name
/// it in errors.
#[derive(Debug, Clone)]
pub struct ParticipantEntry {
    /// Path of the entry, such as `participants[2]`.
    pub field: String,
    /// Path of its identity id: `participants[2].id`, or the entry itself
    /// in a plain list of ids.
    pub id_field: String,
    /// `None` when the request set neither an id nor a nickname.
    pub reference: Option<ParticipantRef>,
}

impl ParticipantEntry {
    /// Builds an entry of a list of identifier messages, such as
    /// `participants[index]`.
    pub fn listed(list: &str, index: usize, reference: Option<ParticipantRef>) -> Self {
        let field = format!("{list}[{index}]");
        Self {
            id_field: format!("{field}.id"),
            field,
            reference,
        }
    }

    /// Builds an entry of one identifier message at `field`.
    pub fn single(field: &str, reference: Option<ParticipantRef>) -> Self {
        Self {
            field: field.to_string(),
            id_field: format!("{field}.id"),
            reference,
        }
    }

    /// Builds an entry of a plain list of identity ids, such as
    /// `participant_ids[index]`.
    pub fn plain_id(list: &str, index: usize, id: &str) -> Self {
        let field = format!("{list}[{index}]");
        Self {
            id_field: field.clone(),
            field,
            reference: Some(ParticipantRef::Id(id.to_string())),
        }
    }
}

/// A CreateThread request that passed every validation and authorization
/// check, ready for [`Threads::create_thread_in`].
#[derive(Debug, Clone)]
pub struct ThreadPlan {
    pub organization_id: String,
    /// The calling identity, always a participant.
    pub creator_id: String,
    /// Every participant once, the creator included, sorted by id.
    pub participants: Vec<(String, IdentityKind)>,
}

impl ThreadPlan {
    /// Digest of the plan for request keys: the organization and the
    /// participant set, whatever the order they were listed in.
    pub fn fingerprint(&self) -> String {
        let ids = self.participants.iter().map(|(id, _)| id.as_str());
        crate::keys::fingerprint(std::iter::once(self.organization_id.as_str()).chain(ids))
    }
}

impl Threads {
    /// Runs the checks of CreateThread that precede its transaction. The
    /// caller must be a user, agent or app. The organization must be given
    /// (an agent defaults to its own) and active. At most 49 entries are
    /// allowed, and each must resolve to an identity that may take part.
    /// The caller needs `can_create_thread` on the organization and
    /// `can_initiate` on every agent other than itself.
    pub async fn plan_thread(
        &self,
        caller: &Caller,
        organization_id: Option<&str>,
        entries: &[ParticipantEntry],
    ) -> Result<ThreadPlan> {
        let (caller_id, caller_kind) = identity_of(caller)?;
        if !takes_part(caller_kind) {
            return Err(Error::permission_denied(format!(
                "permission denied: identity type {} cannot take part in threads",
                caller_kind.as_str()
            )));
        }
        let org_id = self
            .thread_organization(caller_id, caller_kind, organization_id)
            .await?;
        self.ensure_organization_active(&org_id).await?;

        if entries.len() > MAX_PARTICIPANTS - 1 {
            return Err(Error::invalid_field(
                "participants",
                &format!("must have at most {} entries", MAX_PARTICIPANTS - 1),
            ));
        }
        let mut participants = vec![(caller_id.to_string(), caller_kind)];
        for entry in entries {
            let resolved = self.resolve_participant(entry, &org_id).await?;
            if !participants.iter().any(|(id, _)| *id == resolved.0) {
                participants.push(resolved);
            }
        }

        let caller_ref = ObjectRef::identity(caller_id);
        self.authorizer
            .require(&caller_ref, "can_create_thread", &org_object(&org_id))
            .await?;
        for (id, kind) in &participants {
            if *kind == IdentityKind::Agent && id != caller_id {
                self.authorizer
                    .require(&caller_ref, "can_initiate", &agent_object(id))
                    .await?;
            }
        }
        participants.sort_by(|left, right| left.0.cmp(&right.0));
        Ok(ThreadPlan {
            organization_id: org_id,
            creator_id: caller_id.to_string(),
            participants,
        })
    }

    /// Inserts a planned thread, its participants and its tuples inside
    /// the caller's write transaction.
    pub async fn create_thread_in(
        &self,
        connection: &mut AnyConnection,
        plan: &ThreadPlan,
    ) -> Result<ThreadRecord> {
        let now = now_micros();
        let thread = ThreadRecord {
            id: new_id(),
            organization_id: plan.organization_id.clone(),
            status: ThreadStatus::Active,
            degrade_reason: String::new(),
            message_count: 0,
            last_message_at: None,
            created_at: now,
            updated_at: now,
            participants: plan
                .participants
                .iter()
                .map(|(id, kind)| ParticipantRecord {
                    id: id.clone(),
                    kind: *kind,
                    joined_at: now,
                    passive: false,
                })
                .collect(),
        };
        store::insert_thread(connection, &thread).await?;
        let object = thread_object(&thread.id);
        let mut tuples = vec![Tuple::new(
            org_object(&thread.organization_id),
            "org",
            object.clone(),
        )];
        tuples.extend(thread.participants.iter().map(|participant| {
            Tuple::new(
                ObjectRef::identity(&participant.id),
                "participant",
                object.clone(),
            )
        }));
        self.authorizer.write_in(connection, &tuples, &[]).await?;
        Ok(thread)
    }

    /// Resolves one entry to an identity that may take part in a thread of
    /// `org_id`: a registered user, app, or agent of that organization.
    pub(crate) async fn resolve_participant(
        &self,
        entry: &ParticipantEntry,
        org_id: &str,
    ) -> Result<(String, IdentityKind)> {
        let raw = match &entry.reference {
            None => {
                return Err(Error::invalid_field(
                    &entry.field,
                    "id or nickname is required",
                ));
            }
            Some(ParticipantRef::Nickname(handle)) => {
                // NOTE: the nickname registry is not built yet, so no
                // handle resolves and every nickname is reported unknown.
                return Err(Error::invalid_field(
                    &format!("{}.nickname", entry.field),
                    &format!("unknown handle \"@{}\"", handle.trim_start_matches('@')),
                ));
            }
            Some(ParticipantRef::Id(raw)) => raw,
        };
        let id = parse_id(&entry.id_field, raw)?;
        let kind = agyn_users::identity::kind_of(&self.db, &id)
            .await?
            .ok_or_else(|| Error::invalid_field(&entry.id_field, "unknown identity"))?;
        if !takes_part(kind) {
            return Err(Error::invalid_field(
                &entry.field,
                &format!(
                    "identity type {} cannot take part in threads",
                    kind.as_str()
                ),
            ));
        }
        if kind == IdentityKind::Agent
            && !self
                .authorizer
                .check(&org_object(org_id), "org", &agent_object(&id))
                .await?
        {
            return Err(Error::invalid_field(
                &entry.field,
                "agent belongs to another organization",
            ));
        }
        Ok((id, kind))
    }

    /// Picks the organization of a new thread: users and apps must name
    /// it, and an agent may omit it to use its own.
    async fn thread_organization(
        &self,
        caller_id: &str,
        caller_kind: IdentityKind,
        requested: Option<&str>,
    ) -> Result<String> {
        let requested = requested
            .map(|id| parse_id("organization_id", id))
            .transpose()?;
        if caller_kind != IdentityKind::Agent {
            return requested.ok_or_else(|| Error::invalid_field("organization_id", "is required"));
        }
        let own = self.agent_organization(caller_id).await?;
        match (requested, own) {
            (None, Some(own)) => Ok(own),
            (None, None) => Err(Error::invalid_field("organization_id", "is required")),
            (Some(requested), Some(own)) if requested == own => Ok(own),
            (Some(_), _) => Err(Error::invalid_field(
                "organization_id",
                "must be the calling agent's own organization",
            )),
        }
    }

    /// Returns the organization of an agent, from its `organization:<o> org
    /// agent:<id>` tuple.
    async fn agent_organization(&self, agent_id: &str) -> Result<Option<String>> {
        let filter = TupleFilter {
            object_type: "agent".to_string(),
            object_id: Some(agent_id.to_string()),
            relation: Some("org".to_string()),
            user: None,
        };
        let page = Page::parse(
            1,
            "",
            SortOrder::Ascending,
            Fingerprint::new("agyn_threads::agent_organization"),
        )?;
        let (tuples, _) = self.authorizer.read(&filter, &page).await?;
        Ok(tuples
            .into_iter()
            .find(|tuple| tuple.user.object_type == "organization")
            .map(|tuple| tuple.user.id))
    }
}

/// Returns whether identities of `kind` may be participants.
fn takes_part(kind: IdentityKind) -> bool {
    matches!(
        kind,
        IdentityKind::User | IdentityKind::Agent | IdentityKind::App
    )
}
