//! The organization and membership operations, independent of the RPC
//! layer. Each operation states its authorization rule first.

use agyn_authz::{ObjectRef, Tuple, missing_permission};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};
use agyn_store::request_keys as keys;
use agyn_store::sqlx::AnyConnection;

use crate::store::{
    self, MembershipRecord, MembershipScope, NewMembership, OrgRecord, OrgState, Role, Status,
};
use crate::{Organizations, cluster, deleting, identity_of, org_object, slug};

const NAME_MAX_CHARS: usize = 128;

/// The membership that CreateMembership creates.
#[derive(Debug, Clone)]
pub struct MembershipInput<'a> {
    pub organization_id: &'a str,
    pub identity_id: &'a str,
    pub role: Option<Role>,
    pub expires_at: Option<i64>,
    pub request_id: &'a str,
}

impl Organizations {
    /// CreateOrganization: users only. The caller becomes its ACTIVE
    /// owner in the same transaction.
    pub async fn create_organization(
        &self,
        caller: &Caller,
        name: &str,
        requested_slug: Option<&str>,
        request_id: &str,
    ) -> Result<OrgRecord> {
        let user_id = caller
            .user_id()
            .ok_or_else(|| Error::permission_denied("only users can create organizations"))?;
        let name = validate_name(name)?;
        let requested_slug = requested_slug.map(validate_slug).transpose()?;
        keys::validate(request_id)?;
        let fingerprint = keys::fingerprint([name, requested_slug.unwrap_or("\u{0}")]);
        let scope = "organizations.CreateOrganization";
        loop {
            let mut tx = self.db.begin_write().await?;
            if let Some(id) =
                keys::replayed(&mut tx, scope, user_id, request_id, &fingerprint).await?
            {
                tx.commit().await?;
                return self.org_or_gone(&id).await;
            }
            let now = now_micros();
            let slug = match requested_slug {
                Some(slug) => {
                    if store::slug_taken(&mut tx, slug).await? {
                        return Err(slug_taken(slug));
                    }
                    slug.to_string()
                }
                None => free_slug(&mut tx, &slug::derive(name)).await?,
            };
            let org = OrgRecord {
                id: agyn_core::id::new_id(),
                name: name.to_string(),
                slug,
                state: OrgState::Active,
                deletion_step: String::new(),
                created_at: now,
                updated_at: now,
            };
            let inserted = async {
                store::insert_org(&mut tx, &org).await?;
                store::insert_membership(
                    &mut tx,
                    &NewMembership {
                        id: &agyn_core::id::new_id(),
                        organization_id: &org.id,
                        identity_id: user_id,
                        role: Role::Owner,
                        status: Status::Active,
                        invited_by: user_id,
                        expires_at: None,
                        now,
                    },
                )
                .await?;
                let object = org_object(&org.id);
                self.authorizer
                    .write_in(
                        &mut tx,
                        &[
                            Tuple::new(ObjectRef::identity(user_id), "owner", object.clone()),
                            Tuple::new(cluster(), "cluster", object),
                        ],
                        &[],
                    )
                    .await?;
                keys::record(&mut tx, scope, user_id, request_id, &fingerprint, &org.id).await
            }
            .await;
            match inserted {
                Ok(()) => {}
                // A concurrent call took the slug or the request key first:
                // start over and see what it left.
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error),
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            // NOTE: the creator's nickname is not seeded: the nickname
            // registry is not built yet.
            tracing::info!(organization_id = %org.id, slug = %org.slug, "Organization created");
            return Ok(org);
        }
    }

    /// GetOrganization: `can_read`. An organization being deleted is
    /// visible to cluster admins only.
    pub async fn get_organization(&self, caller: &Caller, id: &str) -> Result<OrgRecord> {
        let identity = identity_of(caller)?;
        let id = agyn_core::id::parse_id("id", id)?;
        let org = self.visible_org(&identity, &id).await?;
        if org.state == OrgState::Active {
            self.authorizer
                .require(&identity, "can_read", &org_object(&id))
                .await?;
        }
        Ok(org)
    }

    /// ListOrganizations: cluster admins see every organization; others
    /// the ACTIVE ones they are a member of.
    pub async fn list_organizations(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<OrgRecord>, String)> {
        let identity = identity_of(caller)?;
        let fingerprint =
            Fingerprint::new("agynio.api.organizations.v1.ListOrganizations").with(&identity.id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        if self.is_cluster_admin(&identity).await? {
            return store::list_orgs(&self.db, None, &page).await;
        }
        let ids = self
            .authorizer
            .list_objects("organization", "member", &identity)
            .await?;
        store::list_orgs(&self.db, Some(&ids), &page).await
    }

    /// UpdateOrganization: `can_manage_organization`.
    pub async fn update_organization(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<&str>,
        new_slug: Option<&str>,
    ) -> Result<OrgRecord> {
        let identity = identity_of(caller)?;
        let id = agyn_core::id::parse_id("id", id)?;
        let org = self.visible_org(&identity, &id).await?;
        if org.state == OrgState::Deleting {
            return Err(deleting(&id));
        }
        self.authorizer
            .require(&identity, "can_manage_organization", &org_object(&id))
            .await?;
        if name.is_none() && new_slug.is_none() {
            return Err(Error::invalid_argument("no fields to update"));
        }
        let name = name.map(validate_name).transpose()?;
        let new_slug = new_slug.map(validate_slug).transpose()?;
        let mut tx = self.db.begin_write().await?;
        store::lock_org(&mut tx, self.db.backend(), &id).await?;
        let mut org = store::org_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("organization", &id))?;
        if org.state == OrgState::Deleting {
            return Err(deleting(&id));
        }
        if let Some(name) = name {
            org.name = name.to_string();
        }
        if let Some(new_slug) = new_slug
            && new_slug != org.slug
        {
            if store::slug_taken(&mut tx, new_slug).await? {
                return Err(slug_taken(new_slug));
            }
            org.slug = new_slug.to_string();
        }
        org.updated_at = now_micros().max(org.updated_at);
        match store::update_org(&mut tx, &org).await {
            Err(error) if is_conflict(&error) => return Err(slug_taken(&org.slug)),
            other => other?,
        }
        match tx.commit().await {
            Err(error) if agyn_store::is_unique_violation(&error) => {
                return Err(slug_taken(&org.slug));
            }
            other => other?,
        }
        Ok(org)
    }

    /// DeleteOrganization: `can_manage_organization`. Access ends before
    /// the call returns; the purge continues in the background. A repeat
    /// on a DELETING organization succeeds for cluster admins and for
    /// identities that still hold an OWNER membership.
    pub async fn delete_organization(&self, caller: &Caller, id: &str) -> Result<()> {
        let identity = identity_of(caller)?;
        let id = agyn_core::id::parse_id("id", id)?;
        let object = org_object(&id);
        // Permission checks read through the pool, so they run before the
        // write transaction: holding a SQLite write lock while waiting for
        // a second connection would stall every other writer.
        let org = self.org_or_gone(&id).await?;
        if org.state == OrgState::Deleting {
            return self.repeat_delete(&identity, &id).await;
        }
        if !self
            .authorizer
            .check(&identity, "can_manage_organization", &object)
            .await?
        {
            return Err(missing_permission("can_manage_organization", &object));
        }
        let mut tx = self.db.begin_write().await?;
        store::lock_org(&mut tx, self.db.backend(), &id).await?;
        let Some(mut org) = store::org_by_id(&mut tx, &id).await? else {
            return Err(Error::not_found("organization", &id));
        };
        if org.state == OrgState::Deleting {
            // A concurrent call closed it first.
            return Ok(());
        }
        org.state = OrgState::Deleting;
        org.deletion_step = crate::DELETION_STEPS[0].to_string();
        org.updated_at = now_micros().max(org.updated_at);
        store::update_org(&mut tx, &org).await?;
        self.authorizer
            .delete_object_in(&mut tx, &object, Some(&["owner", "member"]))
            .await?;
        tx.commit().await?;
        tracing::info!(organization_id = %id, "Organization deletion started");
        self.purge.wake();
        Ok(())
    }

    /// DeleteOrganization on an organization that is already DELETING:
    /// succeeds for cluster admins and for identities that still hold an
    /// OWNER membership row.
    async fn repeat_delete(&self, identity: &ObjectRef, id: &str) -> Result<()> {
        let mut connection = self.db.pool().acquire().await?;
        let owner = store::membership_of(&mut connection, id, &identity.id)
            .await?
            .is_some_and(|membership| membership.role == Role::Owner);
        drop(connection);
        if owner || self.is_cluster_admin(identity).await? {
            self.purge.wake();
            return Ok(());
        }
        Err(missing_permission(
            "can_manage_organization",
            &org_object(id),
        ))
    }

    /// CreateMembership: `can_add_member` adds directly (ACTIVE),
    /// otherwise `can_invite` invites (PENDING).
    pub async fn create_membership(
        &self,
        caller: &Caller,
        input: &MembershipInput<'_>,
    ) -> Result<MembershipRecord> {
        let identity = identity_of(caller)?;
        let org_id = agyn_core::id::parse_id("organization_id", input.organization_id)?;
        let target = agyn_core::id::parse_id("identity_id", input.identity_id)?;
        let role = input
            .role
            .ok_or_else(|| Error::invalid_field("role", "must not be unspecified"))?;
        keys::validate(input.request_id)?;
        let org = self.visible_org(&identity, &org_id).await?;
        let object = org_object(&org_id);
        let status = if self
            .authorizer
            .check(&identity, "can_add_member", &object)
            .await?
        {
            Status::Active
        } else if self
            .authorizer
            .check(&identity, "can_invite", &object)
            .await?
        {
            Status::Pending
        } else {
            return Err(missing_permission("can_invite", &object));
        };
        if org.state == OrgState::Deleting {
            return Err(deleting(&org_id));
        }
        match agyn_users::identity::kind_of(&self.db, &target).await? {
            None => return Err(Error::not_found("identity", &target)),
            Some(IdentityKind::User) => {}
            Some(_) => {
                return Err(Error::invalid_field(
                    "identity_id",
                    "only users can be members",
                ));
            }
        }
        let fingerprint = keys::fingerprint([
            &org_id,
            &target,
            role.relation(),
            &input
                .expires_at
                .map(|at| at.to_string())
                .unwrap_or_default(),
        ]);
        let scope = "organizations.CreateMembership";
        loop {
            let mut tx = self.db.begin_write().await?;
            if let Some(id) =
                keys::replayed(&mut tx, scope, &identity.id, input.request_id, &fingerprint).await?
            {
                tx.commit().await?;
                return self.membership_or_gone(&id).await;
            }
            store::lock_org(&mut tx, self.db.backend(), &org_id).await?;
            match store::org_by_id(&mut tx, &org_id).await? {
                None => return Err(Error::not_found("organization", &org_id)),
                Some(org) if org.state == OrgState::Deleting => return Err(deleting(&org_id)),
                Some(_) => {}
            }
            if store::membership_of(&mut tx, &org_id, &target)
                .await?
                .is_some()
            {
                return Err(Error::already_exists(format!(
                    "identity {target} already has a membership in organization {org_id}"
                )));
            }
            let id = agyn_core::id::new_id();
            let created = async {
                store::insert_membership(
                    &mut tx,
                    &NewMembership {
                        id: &id,
                        organization_id: &org_id,
                        identity_id: &target,
                        role,
                        status,
                        invited_by: &identity.id,
                        expires_at: input.expires_at,
                        now: now_micros(),
                    },
                )
                .await?;
                if status == Status::Active {
                    self.authorizer
                        .write_in(&mut tx, &[role_tuple(&target, role, &org_id)], &[])
                        .await?;
                }
                keys::record(
                    &mut tx,
                    scope,
                    &identity.id,
                    input.request_id,
                    &fingerprint,
                    &id,
                )
                .await
            }
            .await;
            match created {
                Ok(()) => {}
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error),
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            // NOTE: nicknames are not seeded: the nickname registry is not
            // built yet.
            let membership = self.membership_or_gone(&id).await?;
            self.membership_updated(&membership, false);
            return Ok(membership);
        }
    }

    /// AcceptMembership: the invited identity only.
    pub async fn accept_membership(&self, caller: &Caller, id: &str) -> Result<MembershipRecord> {
        let (mut tx, membership) = self.own_pending(caller, id).await?;
        store::set_membership(
            &mut tx,
            &membership.id,
            membership.role,
            Status::Active,
            now_micros(),
        )
        .await?;
        self.authorizer
            .write_in(
                &mut tx,
                &[role_tuple(
                    &membership.identity_id,
                    membership.role,
                    &membership.organization_id,
                )],
                &[],
            )
            .await?;
        tx.commit().await?;
        let membership = self.membership_or_gone(&membership.id).await?;
        self.membership_updated(&membership, false);
        Ok(membership)
    }

    /// DeclineMembership: the invited identity only; deletes the
    /// invitation.
    pub async fn decline_membership(&self, caller: &Caller, id: &str) -> Result<()> {
        let (mut tx, membership) = self.own_pending(caller, id).await?;
        store::delete_membership(&mut tx, &membership.id).await?;
        tx.commit().await?;
        self.membership_updated(&membership, true);
        Ok(())
    }

    /// RemoveMembership: `can_manage_members`, or the member itself
    /// leaving. The last ACTIVE owner cannot be removed.
    pub async fn remove_membership(&self, caller: &Caller, id: &str) -> Result<()> {
        let identity = identity_of(caller)?;
        let id = agyn_core::id::parse_id("id", id)?;
        let membership = self.membership_or_gone(&id).await?;
        let object = org_object(&membership.organization_id);
        if membership.identity_id != identity.id
            && !self
                .authorizer
                .check(&identity, "can_manage_members", &object)
                .await?
        {
            return Err(missing_permission("can_manage_members", &object));
        }
        let mut tx = self.db.begin_write().await?;
        store::lock_org(&mut tx, self.db.backend(), &membership.organization_id).await?;
        let membership = store::membership_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("membership", &id))?;
        if membership.status == Status::Active && membership.role == Role::Owner {
            ensure_not_last_owner(&mut tx, &membership.organization_id).await?;
        }
        store::delete_membership(&mut tx, &id).await?;
        if membership.status == Status::Active {
            let member = ObjectRef::identity(&membership.identity_id);
            self.authorizer
                .write_in(
                    &mut tx,
                    &[],
                    &[role_tuple(
                        &membership.identity_id,
                        membership.role,
                        &membership.organization_id,
                    )],
                )
                .await?;
            self.authorizer
                .delete_user_relations_under_in(
                    &mut tx,
                    &member,
                    "agent",
                    &["owner", "maintainer", "participant"],
                    "org",
                    &object,
                )
                .await?;
        }
        tx.commit().await?;
        self.membership_updated(&membership, true);
        Ok(())
    }

    /// UpdateMembershipRole: `can_manage_members`. Demoting the last
    /// ACTIVE owner is refused.
    pub async fn update_membership_role(
        &self,
        caller: &Caller,
        id: &str,
        role: Option<Role>,
    ) -> Result<MembershipRecord> {
        let identity = identity_of(caller)?;
        let id = agyn_core::id::parse_id("id", id)?;
        let membership = self.membership_or_gone(&id).await?;
        self.authorizer
            .require(
                &identity,
                "can_manage_members",
                &org_object(&membership.organization_id),
            )
            .await?;
        let role = role.ok_or_else(|| Error::invalid_field("role", "must not be unspecified"))?;
        let mut tx = self.db.begin_write().await?;
        store::lock_org(&mut tx, self.db.backend(), &membership.organization_id).await?;
        let membership = store::membership_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("membership", &id))?;
        if membership.role == role {
            return Ok(membership);
        }
        if membership.status == Status::Active {
            if membership.role == Role::Owner {
                ensure_not_last_owner(&mut tx, &membership.organization_id).await?;
            }
            self.authorizer
                .write_in(
                    &mut tx,
                    &[role_tuple(
                        &membership.identity_id,
                        role,
                        &membership.organization_id,
                    )],
                    &[role_tuple(
                        &membership.identity_id,
                        membership.role,
                        &membership.organization_id,
                    )],
                )
                .await?;
        }
        store::set_membership(&mut tx, &id, role, membership.status, now_micros()).await?;
        tx.commit().await?;
        let membership = self.membership_or_gone(&id).await?;
        self.membership_updated(&membership, false);
        Ok(membership)
    }

    /// ListMembers: any status with `can_manage_members`, ACTIVE only with
    /// `can_read`.
    pub async fn list_members(
        &self,
        caller: &Caller,
        organization_id: &str,
        status: Option<Status>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<MembershipRecord>, String)> {
        let identity = identity_of(caller)?;
        let org_id = agyn_core::id::parse_id("organization_id", organization_id)?;
        self.visible_org(&identity, &org_id).await?;
        let object = org_object(&org_id);
        let status = if self
            .authorizer
            .check(&identity, "can_manage_members", &object)
            .await?
        {
            status
        } else {
            self.authorizer
                .require(&identity, "can_read", &object)
                .await?;
            match status {
                None | Some(Status::Active) => Some(Status::Active),
                Some(Status::Pending) => {
                    return Err(missing_permission("can_manage_members", &object));
                }
            }
        };
        let fingerprint = Fingerprint::new("agynio.api.organizations.v1.ListMembers")
            .with(&identity.id)
            .with(&org_id)
            .with(status.map(Status::as_str).unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        store::list_memberships(
            &self.db,
            MembershipScope::Organization(&org_id),
            status,
            &page,
        )
        .await
    }

    /// ListMyMemberships: the caller's own memberships, outside
    /// organizations being deleted.
    pub async fn list_my_memberships(
        &self,
        caller: &Caller,
        status: Option<Status>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<MembershipRecord>, String)> {
        let identity = identity_of(caller)?;
        let fingerprint = Fingerprint::new("agynio.api.organizations.v1.ListMyMemberships")
            .with(&identity.id)
            .with(status.map(Status::as_str).unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        store::list_memberships(
            &self.db,
            MembershipScope::Identity(&identity.id),
            status,
            &page,
        )
        .await
    }

    /// GetOrganizationState (internal): the state, or `not_found`.
    pub async fn organization_state(&self, id: &str) -> Result<OrgState> {
        let id = agyn_core::id::parse_id("id", id)?;
        let mut connection = self.db.pool().acquire().await?;
        store::org_by_id(&mut connection, &id)
            .await?
            .map(|org| org.state)
            .ok_or_else(|| Error::not_found("organization", &id))
    }

    /// Loads an organization the way `identity` may see it: one being
    /// deleted is `not_found` for everyone but cluster admins.
    async fn visible_org(&self, identity: &ObjectRef, id: &str) -> Result<OrgRecord> {
        let mut connection = self.db.pool().acquire().await?;
        let org = store::org_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("organization", id))?;
        drop(connection);
        if org.state == OrgState::Deleting && !self.is_cluster_admin(identity).await? {
            return Err(Error::not_found("organization", id));
        }
        Ok(org)
    }

    async fn org_or_gone(&self, id: &str) -> Result<OrgRecord> {
        let mut connection = self.db.pool().acquire().await?;
        store::org_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("organization", id))
    }

    async fn membership_or_gone(&self, id: &str) -> Result<MembershipRecord> {
        let mut connection = self.db.pool().acquire().await?;
        store::membership_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("membership", id))
    }

    /// Opens a write transaction holding the caller's own PENDING
    /// membership `id`, in an ACTIVE organization. Another identity's
    /// membership is `not_found`.
    async fn own_pending(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(
        agyn_store::sqlx::Transaction<'static, agyn_store::sqlx::Any>,
        MembershipRecord,
    )> {
        let identity = identity_of(caller)?;
        let id = agyn_core::id::parse_id("id", id)?;
        let mut tx = self.db.begin_write().await?;
        let membership = store::membership_by_id(&mut tx, &id)
            .await?
            .filter(|membership| membership.identity_id == identity.id)
            .ok_or_else(|| Error::not_found("membership", &id))?;
        if membership.status != Status::Pending {
            return Err(Error::failed_precondition("membership is not pending"));
        }
        match store::org_by_id(&mut tx, &membership.organization_id).await? {
            Some(org) if org.state == OrgState::Active => {}
            _ => return Err(deleting(&membership.organization_id)),
        }
        Ok((tx, membership))
    }
}

fn role_tuple(identity_id: &str, role: Role, org_id: &str) -> Tuple {
    Tuple::new(
        ObjectRef::identity(identity_id),
        role.relation(),
        org_object(org_id),
    )
}

async fn ensure_not_last_owner(connection: &mut AnyConnection, org_id: &str) -> Result<()> {
    if store::count_active_owners(connection, org_id).await? <= 1 {
        return Err(
            Error::failed_precondition("cannot remove the last owner").with_reason("LAST_OWNER")
        );
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<&str> {
    agyn_core::text::display_name("name", name, NAME_MAX_CHARS)
}

fn validate_slug(value: &str) -> Result<&str> {
    if !slug::is_valid(value) {
        return Err(Error::invalid_field(
            "slug",
            "must be a DNS label: lowercase letters, digits and '-', at most 63 characters, \
             starting and ending with a letter or digit",
        ));
    }
    Ok(value)
}

fn slug_taken(slug: &str) -> Error {
    Error::already_exists(format!("slug {slug:?} is taken"))
}

async fn free_slug(connection: &mut AnyConnection, base: &str) -> Result<String> {
    for candidate in slug::candidates(base).take(1000) {
        if !store::slug_taken(connection, &candidate).await? {
            return Ok(candidate);
        }
    }
    Err(Error::unavailable(
        "no free slug found; choose one explicitly",
    ))
}

/// Returns whether `error` is a unique-key conflict with a concurrent writer.
fn is_conflict(error: &Error) -> bool {
    error.is_unique_violation()
}
