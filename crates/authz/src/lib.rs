//! Authorization: relationship tuples `(user, relation, object)` stored in
//! the platform database, a model fixed in code ([`model`]), and an
//! evaluator that checks permissions in process.
//!
//! Check results are never cached across requests, so a tuple written by
//! one request is visible to the next request on every replica.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod evaluator;
pub mod model;
pub mod service;
mod store;

use agyn_core::{Error, Result};
use agyn_store::Db;

pub use store::TupleFilter;

/// Most tuples one `Write` call may write and delete together.
pub const MAX_WRITE_TUPLES: usize = 100;

/// An object or user reference, `type:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub object_type: String,
    pub id: String,
}

impl ObjectRef {
    pub fn new(object_type: &str, id: &str) -> Self {
        Self {
            object_type: object_type.to_string(),
            id: id.to_string(),
        }
    }

    /// `identity:<id>`.
    pub fn identity(id: &str) -> Self {
        Self::new("identity", id)
    }

    /// Parses `type:id`; `field` names the request field in errors. The
    /// type must be one the model declares and the id must not be empty.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let (object_type, id) = value
            .split_once(':')
            .ok_or_else(|| Error::invalid_field(field, "must be <type>:<id>"))?;
        if model::object_type(object_type).is_none() {
            return Err(Error::invalid_field(
                field,
                &format!("unknown object type {object_type:?}"),
            ));
        }
        if id.is_empty() {
            return Err(Error::invalid_field(field, "must be <type>:<id>"));
        }
        Ok(Self::new(object_type, id))
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.object_type, self.id)
    }
}

/// A relationship tuple: `user` has `relation` on `object`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub user: ObjectRef,
    pub relation: String,
    pub object: ObjectRef,
}

impl Tuple {
    pub fn new(user: ObjectRef, relation: &str, object: ObjectRef) -> Self {
        Self {
            user,
            relation: relation.to_string(),
            object,
        }
    }

    /// Checks the tuple against the model: the relation is declared on
    /// the object type and accepts the user's type in direct tuples.
    pub fn validate(&self, field: &str) -> Result<()> {
        let relation =
            model::relation(&self.object.object_type, &self.relation).ok_or_else(|| {
                Error::invalid_field(
                    &format!("{field}.relation"),
                    &format!(
                        "{:?} is not a relation of {}",
                        self.relation, self.object.object_type
                    ),
                )
            })?;
        if !relation.direct.contains(&self.user.object_type.as_str()) {
            return Err(Error::invalid_field(
                &format!("{field}.user"),
                &format!(
                    "{} cannot hold {}#{} directly",
                    self.user.object_type, self.object.object_type, self.relation
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.user, self.relation, self.object)
    }
}

/// The tuple store and the evaluator over one database.
#[derive(Clone)]
pub struct Authorizer {
    db: Db,
}

impl Authorizer {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Returns whether `user` has `relation` on `object`.
    pub async fn check(
        &self,
        user: &ObjectRef,
        relation: &str,
        object: &ObjectRef,
    ) -> Result<bool> {
        evaluator::check(&self.db, user, relation, object).await
    }

    /// Succeeds when `user` has `permission` on `object`; otherwise
    /// `permission_denied` naming the missing permission, with reason
    /// `MISSING_PERMISSION` and the permission and object as metadata.
    pub async fn require(
        &self,
        user: &ObjectRef,
        permission: &str,
        object: &ObjectRef,
    ) -> Result<()> {
        if self.check(user, permission, object).await? {
            return Ok(());
        }
        Err(missing_permission(permission, object))
    }

    /// Writes and deletes tuples atomically. Writing an existing tuple or
    /// deleting a missing one succeeds without change.
    pub async fn write(&self, writes: &[Tuple], deletes: &[Tuple]) -> Result<()> {
        validate_batch(writes, deletes)?;
        let mut tx = self.db.begin_write().await?;
        store::write(&mut tx, writes, deletes, agyn_core::time::now_micros()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes and deletes tuples inside the caller's transaction, so that a
    /// resource and its tuples commit together.
    pub async fn write_in(
        &self,
        connection: &mut agyn_store::sqlx::AnyConnection,
        writes: &[Tuple],
        deletes: &[Tuple],
    ) -> Result<()> {
        validate_batch(writes, deletes)?;
        store::write(connection, writes, deletes, agyn_core::time::now_micros()).await
    }

    /// Deletes every tuple on `object`, or only those of `relations`,
    /// inside the caller's transaction. Returns how many were deleted.
    pub async fn delete_object_in(
        &self,
        connection: &mut agyn_store::sqlx::AnyConnection,
        object: &ObjectRef,
        relations: Option<&[&str]>,
    ) -> Result<u64> {
        store::delete_on_object(connection, object, relations).await
    }

    /// Deletes `user`'s `relations` on every `object_type` object linked
    /// to `parent` by `parent_relation`, inside the caller's transaction:
    /// for example a member's roles on the agents of an organization.
    pub async fn delete_user_relations_under_in(
        &self,
        connection: &mut agyn_store::sqlx::AnyConnection,
        user: &ObjectRef,
        object_type: &str,
        relations: &[&str],
        parent_relation: &str,
        parent: &ObjectRef,
    ) -> Result<u64> {
        store::delete_user_relations_under(
            connection,
            user,
            object_type,
            relations,
            parent_relation,
            parent,
        )
        .await
    }

    /// Returns one page of tuples matching `filter`, ordered by object, relation
    /// and user ascending.
    pub async fn read(
        &self,
        filter: &TupleFilter,
        page: &agyn_core::page::Page,
    ) -> Result<(Vec<Tuple>, String)> {
        store::read(&self.db, filter, page).await
    }

    /// Ids of the objects of `object_type` on which `user` has `relation`
    /// through direct tuples and relations of the same object; `from`
    /// edges are not followed. Sorted by id.
    pub async fn list_objects(
        &self,
        object_type: &str,
        relation: &str,
        user: &ObjectRef,
    ) -> Result<Vec<String>> {
        if model::relation(object_type, relation).is_none() {
            return Err(Error::invalid_field(
                "relation",
                &format!("{relation:?} is not a relation of {object_type}"),
            ));
        }
        let relations = evaluator::same_object_relations(object_type, relation);
        store::list_objects(&self.db, object_type, &relations, user).await
    }
}

/// The `permission_denied` error of a failed [`Authorizer::require`].
pub fn missing_permission(permission: &str, object: &ObjectRef) -> Error {
    Error::permission_denied(format!(
        "permission denied: {permission} on {}",
        object.object_type
    ))
    .with_reason("MISSING_PERMISSION")
    .with_metadata("permission", permission)
    .with_metadata("object", object.to_string())
}

fn validate_batch(writes: &[Tuple], deletes: &[Tuple]) -> Result<()> {
    if writes.len() + deletes.len() > MAX_WRITE_TUPLES {
        return Err(Error::invalid_argument(format!(
            "writes and deletes: at most {MAX_WRITE_TUPLES} tuples per call"
        )));
    }
    for (index, tuple) in writes.iter().enumerate() {
        tuple.validate(&format!("writes[{index}]"))?;
    }
    for (index, tuple) in deletes.iter().enumerate() {
        tuple.validate(&format!("deletes[{index}]"))?;
    }
    Ok(())
}
